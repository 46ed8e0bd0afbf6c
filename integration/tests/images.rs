//! Lab tests of images: the busybox image netd provides, imports through
//! netctl (directory) and the docker client (tarball), inspect, remove, and
//! the clear refusal to pull. Privileged (root), like every lab test.

use std::process::Output;

use integration::{Lab, require_root};
use serde_json::Value;

fn text(o: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr))
}

fn ok(o: Output) -> String {
    assert!(o.status.success(), "command failed ({}):\n{}", o.status, text(&o));
    String::from_utf8_lossy(&o.stdout).into_owned()
}

#[test]
fn images_through_netctl_and_docker() {
    if !require_root("images_through_netctl_and_docker") {
        return;
    }
    let lab = Lab::new(1).unwrap();
    let n = lab.node(0);
    n.start_netd(&[]).unwrap();

    // busybox:latest is there from the first start (Debian's busybox-static).
    let ls = ok(n.netctl(&["image", "ls"]));
    assert!(ls.lines().any(|l| l.starts_with("busybox") && l.contains("latest")), "{ls}");

    // A directory rootfs through netctl, with a config change.
    let rootfs = n.dir.join("rootfs");
    std::fs::create_dir_all(rootfs.join("etc")).unwrap();
    std::fs::write(rootfs.join("etc/greeting"), "hello from a dir\n").unwrap();
    std::os::unix::fs::symlink("/etc/greeting", rootfs.join("greeting")).unwrap();
    let out = ok(n.netctl(&[
        "image",
        "import",
        "app:1",
        rootfs.to_str().unwrap(),
        "--change",
        "CMD [\"cat\", \"/greeting\"]",
    ]));
    assert!(out.trim().starts_with("sha256:"), "{out}");
    let inspect: Value = serde_json::from_str(&ok(n.netctl(&["image", "inspect", "app:1"]))).unwrap();
    assert_eq!(inspect[0]["Config"]["Cmd"], serde_json::json!(["cat", "/greeting"]));
    let dir = inspect[0]["GraphDriver"]["Data"]["Dir"].as_str().unwrap().to_owned();
    assert_eq!(std::fs::read_link(format!("{dir}/greeting")).unwrap().to_str(), Some("/etc/greeting"), "symlinks kept");

    let Some(_) = n.docker(&["version"]) else {
        assert!(std::env::var_os("CI").is_none(), "no docker client in CI: `cargo xtask setup` must provide one");
        return;
    };
    // A tarball through `docker import`.
    let tarball = n.dir.join("rootfs.tar");
    let st =
        std::process::Command::new("tar").arg("-C").arg(&rootfs).arg("-cf").arg(&tarball).arg(".").status().unwrap();
    assert!(st.success());
    let out = ok(n.docker(&["import", "--change", "ENV MODE=test", tarball.to_str().unwrap(), "other:2"]).unwrap());
    assert!(out.contains("sha256:"), "{out}");
    let images = ok(n.docker(&["images"]).unwrap());
    for want in ["busybox", "app", "other"] {
        assert!(images.contains(want), "{images}");
    }
    let env = ok(n.docker(&["image", "inspect", "-f", "{{json .Config.Env}}", "other:2"]).unwrap());
    assert_eq!(env.trim(), "[\"MODE=test\"]");

    // Pulling is refused with a way out; unknown images are 404s.
    let pull = n.docker(&["pull", "alpine:3"]).unwrap();
    assert!(!pull.status.success());
    assert!(text(&pull).contains("does not pull from registries"), "{}", text(&pull));
    let missing = n.docker(&["image", "inspect", "nosuch:1"]).unwrap();
    assert!(!missing.status.success());
    assert!(text(&missing).contains("No such image"), "{}", text(&missing));

    let rmi = ok(n.docker(&["rmi", "other:2"]).unwrap());
    assert!(rmi.contains("Untagged: other:2") && rmi.contains("Deleted: sha256:"), "{rmi}");
    let images = ok(n.docker(&["images"]).unwrap());
    assert!(!images.contains("other"), "{images}");

    // Restart: the same images, busybox not duplicated.
    n.stop_netd().unwrap();
    n.start_netd(&[]).unwrap();
    let ls = ok(n.netctl(&["image", "ls", "-q"]));
    assert_eq!(ls.lines().count(), 2, "{ls}");
}

#[test]
fn volumes_through_netctl_and_docker() {
    if !require_root("volumes_through_netctl_and_docker") {
        return;
    }
    let lab = Lab::new(1).unwrap();
    let n = lab.node(0);
    n.start_netd(&[]).unwrap();
    assert_eq!(ok(n.netctl(&["volume", "create", "data", "--label", "team=net"])).trim(), "data");
    let ls = ok(n.netctl(&["volume", "ls"]));
    assert!(ls.contains("local") && ls.contains("data"), "{ls}");
    let v: Value = serde_json::from_str(&ok(n.netctl(&["volume", "inspect", "data"]))).unwrap();
    assert_eq!(v[0]["Labels"]["team"], "net");
    let bad = n.netctl(&["volume", "create", "a/b"]);
    assert!(!bad.status.success() && text(&bad).contains("invalid volume name"), "{}", text(&bad));
    if n.docker(&["version"]).is_some() {
        let vols = ok(n.docker(&["volume", "ls"]).unwrap());
        assert!(vols.contains("data"), "{vols}");
        let mp = ok(n.docker(&["volume", "inspect", "-f", "{{.Mountpoint}}", "data"]).unwrap());
        assert!(std::path::Path::new(mp.trim()).is_dir(), "{mp}");
        ok(n.docker(&["volume", "create", "second"]).unwrap());
        let missing = n.docker(&["volume", "rm", "nosuch"]).unwrap();
        // docker 28 prints the daemon's message, 20.10 words the 404 itself.
        assert!(
            !missing.status.success() && text(&missing).to_lowercase().contains("no such volume"),
            "{}",
            text(&missing)
        );
        ok(n.docker(&["volume", "rm", "second"]).unwrap());
    } else {
        assert!(std::env::var_os("CI").is_none(), "no docker client in CI");
    }
    ok(n.netctl(&["volume", "rm", "data"]));
    assert_eq!(ok(n.netctl(&["volume", "ls", "-q"])).trim(), "");
}

/// A two-layer `docker save` archive: busybox as the base layer, then a layer
/// that deletes one file (whiteout), replaces one and adds one.
fn docker_save_archive(dir: &std::path::Path, busybox_rootfs: &str, tag: &str) -> std::path::PathBuf {
    let work = dir.join("save");
    std::fs::create_dir_all(work.join("l1")).unwrap();
    std::fs::create_dir_all(work.join("l2")).unwrap();
    let tar = |args: &[&str]| assert!(std::process::Command::new("tar").args(args).status().unwrap().success());
    let extra = dir.join("extra");
    std::fs::create_dir_all(extra.join("etc")).unwrap();
    std::fs::write(extra.join("etc/doomed"), "lower\n").unwrap();
    std::fs::write(extra.join("etc/motd"), "old motd\n").unwrap();
    let l1 = work.join("l1/layer.tar");
    tar(&["-C", busybox_rootfs, "-cf", l1.to_str().unwrap(), "."]);
    tar(&["-C", extra.to_str().unwrap(), "-rf", l1.to_str().unwrap(), "etc/doomed", "etc/motd"]);
    let upper = dir.join("upper");
    std::fs::create_dir_all(upper.join("etc")).unwrap();
    std::fs::write(upper.join("etc/.wh.doomed"), "").unwrap();
    std::fs::write(upper.join("etc/motd"), "loaded from a docker save\n").unwrap();
    std::fs::write(upper.join("added"), "new file\n").unwrap();
    tar(&["-C", upper.to_str().unwrap(), "-cf", work.join("l2/layer.tar").to_str().unwrap(), "etc", "added"]);
    let config = r#"{"architecture":"amd64","os":"linux","config":{"Cmd":["cat","/etc/motd"],"Env":["PATH=/bin:/usr/bin","FROM=save"]}}"#;
    std::fs::write(work.join("cfg.json"), config).unwrap();
    let manifest =
        format!(r#"[{{"Config":"cfg.json","RepoTags":["{tag}"],"Layers":["l1/layer.tar","l2/layer.tar"]}}]"#);
    std::fs::write(work.join("manifest.json"), manifest).unwrap();
    let out = dir.join("saved.tar");
    tar(&["-C", work.to_str().unwrap(), "-cf", out.to_str().unwrap(), "manifest.json", "cfg.json", "l1", "l2"]);
    out
}

#[test]
fn docker_save_archives_load_with_whiteouts() {
    if !require_root("docker_save_archives_load_with_whiteouts") {
        return;
    }
    let lab = Lab::new(1).unwrap();
    let n = lab.node(0);
    n.start_netd(&[]).unwrap();
    let inspect: Value = serde_json::from_str(&ok(n.netctl(&["image", "inspect", "busybox"]))).unwrap();
    let base = inspect[0]["GraphDriver"]["Data"]["Dir"].as_str().unwrap().to_owned();
    let archive = docker_save_archive(&n.dir, &base, "saved:1");
    // netctl: load and tag.
    let out = ok(n.netctl(&["image", "import", "mine:2", archive.to_str().unwrap()]));
    assert!(out.contains("Loaded image: saved:1") && out.contains("Tagged saved:1 as mine:2"), "{out}");
    let run = |image: &str, cmd: &[&str]| {
        let mut args = vec!["run", "--rm", image];
        args.extend_from_slice(cmd);
        ok(n.netctl(&args))
    };
    assert_eq!(run("mine:2", &[]), "loaded from a docker save\n", "config Cmd and the upper layer's file");
    assert_eq!(
        run("saved:1", &["sh", "-c", "cat /added; echo $FROM; test -e /etc/doomed && echo still-there || echo gone"]),
        "new file\nsave\ngone\n"
    );
    // docker load through the stock client.
    let Some(out) = n.docker(&["load", "-i", archive.to_str().unwrap()]) else {
        assert!(std::env::var_os("CI").is_none(), "no docker client in CI");
        return;
    };
    assert!(ok(out).contains("Loaded image: saved:1"));
    // A broken archive is refused and leaves nothing behind.
    std::fs::write(n.dir.join("bad.tar"), b"not an archive").unwrap();
    let bad = n.docker(&["load", "-i", n.dir.join("bad.tar").to_str().unwrap()]).unwrap();
    assert!(!bad.status.success(), "{}", text(&bad));
    let images = ok(n.netctl(&["image", "ls", "-q"]));
    assert_eq!(images.lines().count(), 2, "busybox and the loaded image: {images}");
}
