//! Pure resolution of what a container runs, from its spec and its image, by
//! Docker's rules: the command line (entrypoint + cmd, where overriding the
//! entrypoint drops the image's cmd), the environment (image env overridden by
//! key), the user (`name`, `uid`, `name:group`, `uid:gid` looked up in the
//! image's /etc/passwd and /etc/group), and `ps`-style durations.

use super::spec::ContainerSpec;
use crate::image::ImageConfig;

/// The process a container runs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Process {
    pub args: Vec<String>,
    pub env: Vec<String>,
    pub cwd: String,
    pub user: String,
}

/// Default PATH when neither the image nor the spec sets one.
pub const DEFAULT_PATH: &str = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// Combines a container spec with its image's config.
pub fn process(spec: &ContainerSpec, image: &ImageConfig) -> Result<Process, String> {
    let (entrypoint, cmd) = if !spec.entrypoint.is_empty() {
        (spec.entrypoint.clone(), spec.cmd.clone())
    } else if !spec.cmd.is_empty() {
        (image.entrypoint.clone(), spec.cmd.clone())
    } else {
        (image.entrypoint.clone(), image.cmd.clone())
    };
    let args: Vec<String> = entrypoint.into_iter().chain(cmd).collect();
    if args.is_empty() {
        return Err("no command specified".into());
    }
    let mut env: Vec<String> = Vec::new();
    for e in image.env.iter().chain(&spec.env) {
        let key = e.split_once('=').map_or(e.as_str(), |(k, _)| k);
        env.retain(|x| x.split_once('=').map_or(x.as_str(), |(k, _)| k) != key);
        env.push(e.clone());
    }
    if !env.iter().any(|e| e.starts_with("PATH=")) {
        env.insert(0, DEFAULT_PATH.to_owned());
    }
    let cwd = if !spec.working_dir.is_empty() {
        spec.working_dir.clone()
    } else if !image.working_dir.is_empty() {
        image.working_dir.clone()
    } else {
        "/".to_owned()
    };
    let user = if spec.user.is_empty() { image.user.clone() } else { spec.user.clone() };
    Ok(Process { args, env, cwd, user })
}

fn lookup(file: &str, name: &str, field: usize) -> Option<u32> {
    file.lines().find_map(|l| {
        let f: Vec<&str> = l.split(':').collect();
        (f.first() == Some(&name)).then(|| f.get(field)?.parse().ok()).flatten()
    })
}

/// Resolves `user` (`""`, `name`, `uid`, `name:group`, `uid:gid`) to ids.
pub fn user_ids(user: &str, passwd: &str, group: &str) -> Result<(u32, u32), String> {
    if user.is_empty() {
        return Ok((0, 0));
    }
    let (u, g) = match user.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (user, None),
    };
    let (uid, primary) = match u.parse::<u32>() {
        Ok(n) => (n, lookup_by_uid(passwd, n).unwrap_or(n)),
        Err(_) => {
            let uid = lookup(passwd, u, 2)
                .ok_or_else(|| format!("unable to find user {u}: no matching entries in passwd file"))?;
            (uid, lookup(passwd, u, 3).unwrap_or(0))
        }
    };
    let gid = match g {
        None => primary,
        Some(g) => match g.parse::<u32>() {
            Ok(n) => n,
            Err(_) => lookup(group, g, 2)
                .ok_or_else(|| format!("unable to find group {g}: no matching entries in group file"))?,
        },
    };
    Ok((uid, gid))
}

fn lookup_by_uid(passwd: &str, uid: u32) -> Option<u32> {
    passwd.lines().find_map(|l| {
        let f: Vec<&str> = l.split(':').collect();
        (f.get(2)?.parse::<u32>().ok()? == uid).then(|| f.get(3)?.parse().ok()).flatten()
    })
}

/// Docker's human duration (`Up 3 seconds`, `Exited (0) 2 minutes ago`).
pub fn human_duration(secs: i64) -> String {
    let s = secs.max(0);
    let (m, h, d) = (s / 60, s / 3600, s / 86_400);
    match s {
        0 => "Less than a second".into(),
        1 => "1 second".into(),
        _ if s < 60 => format!("{s} seconds"),
        _ if m == 1 => "About a minute".into(),
        _ if m < 60 => format!("{m} minutes"),
        _ if h == 1 => "About an hour".into(),
        _ if h < 48 => format!("{h} hours"),
        _ if d < 14 => format!("{d} days"),
        _ if d < 56 => format!("{} weeks", d / 7),
        _ if d < 730 => format!("{} months", d / 30),
        _ => format!("{} years", d / 365),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn image(entrypoint: &[&str], cmd: &[&str]) -> ImageConfig {
        ImageConfig {
            entrypoint: entrypoint.iter().map(|s| s.to_string()).collect(),
            cmd: cmd.iter().map(|s| s.to_string()).collect(),
            env: vec!["PATH=/bin".into(), "A=image".into()],
            working_dir: "/srv".into(),
            ..Default::default()
        }
    }

    fn spec(entrypoint: &[&str], cmd: &[&str]) -> ContainerSpec {
        ContainerSpec {
            entrypoint: entrypoint.iter().map(|s| s.to_string()).collect(),
            cmd: cmd.iter().map(|s| s.to_string()).collect(),
            env: vec!["A=spec".into(), "B=1".into()],
            ..Default::default()
        }
    }

    #[test]
    fn entrypoint_and_cmd_follow_docker() {
        let p = process(&spec(&[], &[]), &image(&["/init"], &["serve"])).unwrap();
        assert_eq!(p.args, ["/init", "serve"]);
        let p = process(&spec(&[], &["echo", "hi"]), &image(&["/init"], &["serve"])).unwrap();
        assert_eq!(p.args, ["/init", "echo", "hi"], "cmd replaces the image's cmd");
        let p = process(&spec(&["sh"], &[]), &image(&["/init"], &["serve"])).unwrap();
        assert_eq!(p.args, ["sh"], "a new entrypoint drops the image's cmd");
        assert_eq!(p.env, ["PATH=/bin", "A=spec", "B=1"]);
        assert_eq!(p.cwd, "/srv");
        assert!(process(&spec(&[], &[]), &ImageConfig::default()).is_err());
        let p = process(&spec(&[], &["x"]), &ImageConfig::default()).unwrap();
        assert_eq!(p.env[0], DEFAULT_PATH);
        assert_eq!(p.cwd, "/");
    }

    #[test]
    fn users_resolve_against_the_image() {
        let passwd = "root:x:0:0::/root:/bin/sh\nnobody:x:65534:65534::/:/bin/false\nweb:x:33:33::/:/bin/sh\n";
        let group = "root:x:0:\nnogroup:x:65534:\nwww:x:33:\nstaff:x:50:\n";
        assert_eq!(user_ids("", passwd, group).unwrap(), (0, 0));
        assert_eq!(user_ids("nobody", passwd, group).unwrap(), (65534, 65534));
        assert_eq!(user_ids("33", passwd, group).unwrap(), (33, 33));
        assert_eq!(user_ids("1000", passwd, group).unwrap(), (1000, 1000), "unknown uid: gid = uid");
        assert_eq!(user_ids("web:staff", passwd, group).unwrap(), (33, 50));
        assert_eq!(user_ids("1000:7", passwd, group).unwrap(), (1000, 7));
        assert!(user_ids("ghost", passwd, group).unwrap_err().contains("unable to find user ghost"));
        assert!(user_ids("web:ghosts", passwd, group).unwrap_err().contains("unable to find group ghosts"));
    }

    #[test]
    fn durations_read_like_docker() {
        assert_eq!(human_duration(0), "Less than a second");
        assert_eq!(human_duration(3), "3 seconds");
        assert_eq!(human_duration(90), "About a minute");
        assert_eq!(human_duration(600), "10 minutes");
        assert_eq!(human_duration(3700), "About an hour");
        assert_eq!(human_duration(5 * 3600), "5 hours");
        assert_eq!(human_duration(3 * 86_400), "3 days");
    }
}
