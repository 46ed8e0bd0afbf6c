use super::*;

fn stores() -> (tempfile::TempDir, ImageStore) {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&dir.path().join("netd.db")).unwrap();
    let images = ImageStore::open(dir.path().join("images"), store).unwrap();
    (dir, images)
}

fn tarball(files: &[(&str, &str)]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for (path, data) in files {
        let mut h = tar::Header::new_gnu();
        h.set_path(path).unwrap();
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        h.set_cksum();
        b.append(&h, data.as_bytes()).unwrap();
    }
    b.into_inner().unwrap()
}

fn tag(s: &str) -> Reference {
    Reference::parse(s).unwrap()
}

#[test]
fn import_resolve_and_same_content_same_id() {
    let (_d, images) = stores();
    let t = tarball(&[("etc/motd", "hello")]);
    let a = images.import(&t[..], Some(&tag("app:1")), ImageConfig::default(), "").unwrap();
    assert_eq!(a.tags, ["app:1"]);
    assert_eq!(std::fs::read_to_string(images.rootfs(&a.id).join("etc/motd")).unwrap(), "hello");
    for name in ["app:1", a.id.as_str(), &a.id.as_str()[..8], &format!("sha256:{}", a.id)] {
        assert_eq!(images.resolve(name).unwrap().id, a.id, "{name}");
    }
    assert!(matches!(images.resolve("app"), Err(ImageError::NotFound(_))), "app means app:latest");
    let b = images.import(&t[..], Some(&tag("app:2")), ImageConfig::default(), "").unwrap();
    assert_eq!(a.id, b.id, "identical content and config give the same id");
    assert_eq!(images.resolve("app:2").unwrap().tags, ["app:2", "app:1"]);
    assert_eq!(images.list().unwrap().len(), 1);
}

#[test]
fn a_tag_moves_to_the_newer_image() {
    let (_d, images) = stores();
    let old = images.import(&tarball(&[("v", "1")])[..], Some(&tag("app")), ImageConfig::default(), "").unwrap();
    let new = images.import(&tarball(&[("v", "2")])[..], Some(&tag("app")), ImageConfig::default(), "").unwrap();
    assert_ne!(old.id, new.id);
    assert_eq!(images.resolve("app").unwrap().id, new.id);
    assert!(images.resolve(old.id.as_str()).unwrap().tags.is_empty(), "the old image is now dangling");
}

#[test]
fn remove_untags_then_deletes_and_refuses_when_used() {
    let (_d, images) = stores();
    let t = tarball(&[("f", "x")]);
    let img = images.import(&t[..], Some(&tag("a")), ImageConfig::default(), "").unwrap();
    images.import(&t[..], Some(&tag("b")), ImageConfig::default(), "").unwrap();
    assert!(matches!(images.remove(img.id.as_str(), false, false), Err(ImageError::Conflict(_))));
    assert_eq!(images.remove("a", false, false).unwrap(), [("Untagged".to_owned(), "a:latest".to_owned())]);
    assert!(
        matches!(images.remove("b", false, true), Err(ImageError::Conflict(m)) if m.contains("used by a container"))
    );
    let out = images.remove("b", false, false).unwrap();
    assert_eq!(out.last().unwrap().0, "Deleted");
    assert!(!images.rootfs(&img.id).exists());
    assert!(images.list().unwrap().is_empty());
}

#[test]
fn bad_archive_leaves_nothing_behind() {
    let (d, images) = stores();
    let err = images.import(&b"definitely not a tarball"[..], Some(&tag("x")), ImageConfig::default(), "");
    assert!(matches!(err, Err(ImageError::BadArchive(_))));
    assert!(images.list().unwrap().is_empty());
    assert_eq!(std::fs::read_dir(d.path().join("images")).unwrap().count(), 0, "staging removed");
}

#[test]
fn clean_removes_orphaned_dirs_only() {
    let (d, images) = stores();
    let img = images.import(&tarball(&[("f", "x")])[..], None, ImageConfig::default(), "").unwrap();
    std::fs::create_dir_all(d.path().join("images/tmp-deadbeef/rootfs")).unwrap();
    assert_eq!(images.clean().unwrap(), 1);
    assert!(images.rootfs(&img.id).exists());
}

#[test]
fn busybox_image_from_the_host() {
    let (_d, images) = stores();
    if !Path::new(HOST_BUSYBOX).exists() {
        assert!(std::env::var_os("CI").is_none(), "CI machines get busybox-static from `cargo xtask setup`");
        return;
    }
    let img = images.ensure_busybox(Path::new(HOST_BUSYBOX)).unwrap().expect("created");
    assert_eq!(img.tags, ["busybox:latest"]);
    assert_eq!(img.config.cmd, ["sh"]);
    assert!(images.rootfs(&img.id).join("bin/sh").symlink_metadata().is_ok());
    assert!(images.ensure_busybox(Path::new(HOST_BUSYBOX)).unwrap().is_none(), "only once");
}
