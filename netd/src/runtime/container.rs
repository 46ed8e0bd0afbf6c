//! A container as the store keeps it: its validated spec, what it resolved to
//! at creation (image id, process, mounts), and its state.

use serde::{Deserialize, Serialize};

use super::mounts::ResolvedMount;
use super::spec::{ContainerSpec, MountKind};
use crate::ids::{ContainerId, ImageId};

/// Lifecycle status, as Docker names it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    #[default]
    Created,
    Running,
    Restarting,
    Exited,
    Dead,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Created => "created",
            Status::Running => "running",
            Status::Restarting => "restarting",
            Status::Exited => "exited",
            Status::Dead => "dead",
        }
    }
}

/// Runtime state of a container.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct State {
    pub status: Status,
    /// Host pid of the container's first process while running.
    pub pid: i32,
    pub started_at: String,
    pub finished_at: String,
    pub exit_code: i32,
    pub error: String,
    pub restart_count: u32,
    /// Exits seen so far (for `wait?condition=next-exit`).
    pub exits: u64,
    /// Stopped through the API (restart policies do not restart it).
    pub stopped_by_user: bool,
    /// Published ports while running.
    #[serde(default)]
    pub ports: Vec<crate::model::PortMapping>,
}

/// A mount as recorded (volume mounts keep their volume's name).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MountRecord {
    pub kind: MountKind,
    /// Host path (bind) or volume name (volume).
    pub name: String,
    pub source: String,
    pub target: String,
    pub read_only: bool,
    pub tmpfs_size: u64,
    pub file: bool,
}

impl MountRecord {
    /// The mount as the plan needs it.
    pub fn resolved(&self) -> ResolvedMount {
        ResolvedMount {
            kind: self.kind.clone(),
            source: self.source.clone().into(),
            target: self.target.clone(),
            read_only: self.read_only,
            tmpfs_size: self.tmpfs_size,
            file: self.file,
        }
    }
}

/// A container as netd stores it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContainerRecord {
    pub id: ContainerId,
    /// Name without the leading `/`.
    pub name: String,
    pub created: String,
    /// The image as the user named it.
    pub image: String,
    pub image_id: ImageId,
    pub spec: ContainerSpec,
    pub args: Vec<String>,
    pub env: Vec<String>,
    pub cwd: String,
    pub uid: u32,
    pub gid: u32,
    pub hostname: String,
    pub mounts: Vec<MountRecord>,
    /// Network attachments (bridge mode), the primary one first.
    #[serde(default)]
    pub endpoints: Vec<crate::model::Endpoint>,
    pub state: State,
}

impl crate::store::Record for ContainerRecord {
    const KIND: &'static str = "container";
    const TABLE: redb::TableDefinition<'static, &'static str, &'static [u8]> = redb::TableDefinition::new("containers");
    fn key(&self) -> String {
        self.id.to_string()
    }
}

impl ContainerRecord {
    pub fn running(&self) -> bool {
        matches!(self.state.status, Status::Running | Status::Restarting)
    }

    /// Docker's `Status` column (`Up 3 seconds`, `Exited (0) 1 minute ago`).
    pub fn status_text(&self, now: i64) -> String {
        let secs = |t: &str| t.parse::<jiff::Timestamp>().map(|t| now - t.as_second()).unwrap_or(0);
        match self.state.status {
            Status::Created => "Created".into(),
            Status::Running => format!("Up {}", super::resolve::human_duration(secs(&self.state.started_at))),
            Status::Restarting => format!("Restarting ({})", self.state.exit_code),
            Status::Exited => format!(
                "Exited ({}) {} ago",
                self.state.exit_code,
                super::resolve::human_duration(secs(&self.state.finished_at))
            ),
            Status::Dead => "Dead".into(),
        }
    }
}
