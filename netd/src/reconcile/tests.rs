use std::sync::Mutex;

use super::*;

fn link(index: u32, name: &str, alias: Option<String>) -> ObservedLink {
    ObservedLink { index, name: name.to_owned(), alias }
}

#[test]
fn only_marked_links_of_missing_networks_are_deleted() {
    let live = NetworkId::random();
    let gone = NetworkId::random();
    let desired = Desired { networks: [live.clone()].into() };
    let observed = vec![
        link(1, "lo", None),
        link(2, "eth0", Some("uplink".into())),
        link(3, "br-live", Some(format!("{OWNER_PREFIX}{live}"))),
        link(4, "br-gone", Some(format!("{OWNER_PREFIX}{gone}"))),
        link(5, "br-bad", Some(format!("{OWNER_PREFIX}not-an-id"))),
        link(6, "netd-lookalike", Some("netd:other".into())),
    ];
    let ops = plan(&desired, &observed);
    let deleted: Vec<_> = ops.iter().map(|Op::DeleteLink { name, .. }| name.as_str()).collect();
    assert_eq!(deleted, ["br-gone", "br-bad"]);
    assert!(matches!(&ops[0], Op::DeleteLink { reason, .. } if reason.contains(gone.short())));
}

#[test]
fn plan_is_idempotent_once_applied() {
    let gone = NetworkId::random();
    let observed = vec![link(4, "br-gone", Some(format!("{OWNER_PREFIX}{gone}")))];
    assert_eq!(plan(&Desired::default(), &observed).len(), 1);
    assert!(plan(&Desired::default(), &[]).is_empty());
}

/// A recording fake of the kernel's link table.
#[derive(Default)]
struct FakeLinks {
    links: Mutex<Vec<ObservedLink>>,
    deleted: Mutex<Vec<String>>,
    fail_on: Option<String>,
}

impl Links for FakeLinks {
    async fn list(&self) -> Result<Vec<ObservedLink>, LinksError> {
        Ok(self.links.lock().unwrap().clone())
    }
    async fn delete(&self, index: u32, name: &str) -> Result<(), LinksError> {
        if self.fail_on.as_deref() == Some(name) {
            return Err(LinksError::Netlink { op: "delete", ifname: name.to_owned(), message: "EBUSY".into() });
        }
        self.links.lock().unwrap().retain(|l| l.index != index);
        self.deleted.lock().unwrap().push(name.to_owned());
        Ok(())
    }
}

#[tokio::test]
async fn apply_deletes_through_the_effect_layer_and_reports_failures() {
    let gone = NetworkId::random();
    let fake = FakeLinks {
        links: Mutex::new(vec![
            link(7, "br-a", Some(format!("{OWNER_PREFIX}{gone}"))),
            link(8, "br-b", Some(format!("{OWNER_PREFIX}{gone}"))),
            link(9, "keep", None),
        ]),
        fail_on: Some("br-b".into()),
        ..Default::default()
    };
    let ops = plan(&Desired::default(), &fake.list().await.unwrap());
    let (done, errors) = apply(&fake, &ops).await;
    assert_eq!(done, 1);
    assert_eq!(errors.len(), 1);
    assert!(errors[0].to_string().contains("br-b"));
    assert_eq!(*fake.deleted.lock().unwrap(), ["br-a"]);
    let left: Vec<_> = fake.list().await.unwrap().into_iter().map(|l| l.name).collect();
    assert_eq!(left, ["br-b", "keep"]);
}
