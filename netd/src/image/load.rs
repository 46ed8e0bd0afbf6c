//! `docker save` tarballs (what `docker load` sends): a manifest naming, per
//! image, its config and its layer tars in order. Layers are applied one on
//! top of the other into one rootfs directory, with OCI whiteouts: `.wh.NAME`
//! deletes NAME from the layers below, `.wh..wh..opq` empties its directory.

use std::io::Read;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use super::{ImageConfig, ImageError};

/// One entry of `manifest.json`.
#[derive(Debug, Deserialize)]
pub struct ManifestEntry {
    #[serde(rename = "Config")]
    pub config: String,
    #[serde(rename = "RepoTags", default)]
    pub repo_tags: Option<Vec<String>>,
    #[serde(rename = "Layers")]
    pub layers: Vec<String>,
}

/// The parts of an image config json netd keeps.
#[derive(Debug, Default, Deserialize)]
struct ConfigFile {
    #[serde(default)]
    config: Option<ContainerConfig>,
}

#[derive(Debug, Default, Deserialize)]
struct ContainerConfig {
    #[serde(rename = "Cmd", default)]
    cmd: Option<Vec<String>>,
    #[serde(rename = "Entrypoint", default)]
    entrypoint: Option<Vec<String>>,
    #[serde(rename = "Env", default)]
    env: Option<Vec<String>>,
    #[serde(rename = "WorkingDir", default)]
    working_dir: Option<String>,
    #[serde(rename = "User", default)]
    user: Option<String>,
    #[serde(rename = "ExposedPorts", default)]
    exposed_ports: Option<std::collections::BTreeMap<String, serde_json::Value>>,
    #[serde(rename = "Labels", default)]
    labels: Option<std::collections::BTreeMap<String, String>>,
}

/// Parses an image config json into netd's config.
pub fn parse_config(bytes: &[u8]) -> Result<ImageConfig, ImageError> {
    let v: serde_json::Value =
        serde_json::from_slice(bytes).map_err(|e| ImageError::BadArchive(format!("image config: {e}")))?;
    if !v.is_object() {
        return Err(ImageError::BadArchive("image config: expected a JSON object".into()));
    }
    let f: ConfigFile = serde_json::from_value(v).map_err(|e| ImageError::BadArchive(format!("image config: {e}")))?;
    let c = f.config.unwrap_or_default();
    Ok(ImageConfig {
        cmd: c.cmd.unwrap_or_default(),
        entrypoint: c.entrypoint.unwrap_or_default(),
        env: c.env.unwrap_or_default(),
        working_dir: c.working_dir.unwrap_or_default(),
        user: c.user.unwrap_or_default(),
        exposed_ports: c.exposed_ports.map(|m| m.into_keys().collect()).unwrap_or_default(),
        labels: c.labels.unwrap_or_default(),
    })
}

/// A path named by the manifest, inside the unpacked archive.
pub fn member(root: &Path, name: &str) -> Result<PathBuf, ImageError> {
    if name.starts_with('/') || name.split('/').any(|c| c == "..") || name.is_empty() {
        return Err(ImageError::BadArchive(format!("manifest names {name:?} outside the archive")));
    }
    Ok(root.join(name))
}

/// Applies one layer tar (plain or gzip) onto `rootfs`.
pub fn apply_layer(input: impl Read, rootfs: &Path) -> Result<(), ImageError> {
    let mut buf = std::io::BufReader::new(input);
    let gzip = std::io::BufRead::fill_buf(&mut buf).map(|h| h.starts_with(&[0x1f, 0x8b])).unwrap_or(false);
    let reader: Box<dyn Read> = if gzip { Box::new(flate2::read::GzDecoder::new(buf)) } else { Box::new(buf) };
    let mut archive = tar::Archive::new(reader);
    archive.set_preserve_permissions(true);
    archive.set_overwrite(true);
    let entries = archive.entries().map_err(|e| ImageError::BadArchive(e.to_string()))?;
    for entry in entries {
        let mut entry = entry.map_err(|e| ImageError::BadArchive(format!("corrupt layer entry: {e}")))?;
        let path = entry.path().map_err(|e| ImageError::BadArchive(e.to_string()))?.into_owned();
        if path.components().any(|c| matches!(c, std::path::Component::ParentDir)) {
            return Err(ImageError::BadArchive(format!("{}: layer entry escapes the rootfs", path.display())));
        }
        let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        let parent = path.parent().map(Path::to_path_buf).unwrap_or_default();
        if name == ".wh..wh..opq" {
            let dir = super::super::runtime::init::secure_join(rootfs, &parent.to_string_lossy(), false)
                .map_err(ImageError::BadArchive)?;
            if let Ok(children) = std::fs::read_dir(&dir) {
                for c in children.flatten() {
                    let p = c.path();
                    let _ = if p.is_dir() && !p.is_symlink() {
                        std::fs::remove_dir_all(&p)
                    } else {
                        std::fs::remove_file(&p)
                    };
                }
            }
            continue;
        }
        if let Some(hidden) = name.strip_prefix(".wh.") {
            let target =
                super::super::runtime::init::secure_join(rootfs, &parent.join(hidden).to_string_lossy(), false)
                    .map_err(ImageError::BadArchive)?;
            let _ = if target.is_dir() && !target.is_symlink() {
                std::fs::remove_dir_all(&target)
            } else {
                std::fs::remove_file(&target)
            };
            continue;
        }
        if matches!(entry.header().entry_type(), tar::EntryType::Char | tar::EntryType::Block | tar::EntryType::Fifo) {
            continue;
        }
        // A file replacing a directory (or the reverse) from a lower layer.
        let dest = rootfs.join(&path);
        if let Ok(m) = std::fs::symlink_metadata(&dest)
            && m.is_dir() != entry.header().entry_type().is_dir()
        {
            let _ = if m.is_dir() { std::fs::remove_dir_all(&dest) } else { std::fs::remove_file(&dest) };
        }
        let inside = entry
            .unpack_in(rootfs)
            .map_err(|e| ImageError::BadArchive(format!("{}: cannot unpack: {e}", path.display())))?;
        if !inside {
            return Err(ImageError::BadArchive(format!("{}: layer entry escapes the rootfs", path.display())));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn layer(entries: &[(&str, &str)]) -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        for (p, data) in entries {
            let mut h = tar::Header::new_gnu();
            h.set_path(p).unwrap();
            h.set_size(data.len() as u64);
            h.set_mode(0o644);
            h.set_cksum();
            b.append(&h, data.as_bytes()).unwrap();
        }
        b.into_inner().unwrap()
    }

    #[test]
    fn layers_stack_with_whiteouts() {
        let d = tempfile::tempdir().unwrap();
        let root = d.path();
        apply_layer(&layer(&[("etc/a", "1"), ("etc/b", "2"), ("var/x/old", "o")])[..], root).unwrap();
        apply_layer(
            &layer(&[("etc/.wh.a", ""), ("etc/b", "22"), ("var/x/.wh..wh..opq", ""), ("var/x/new", "n")])[..],
            root,
        )
        .unwrap();
        assert!(!root.join("etc/a").exists(), "whiteout removed a");
        assert_eq!(std::fs::read_to_string(root.join("etc/b")).unwrap(), "22", "upper layer wins");
        assert!(!root.join("var/x/old").exists(), "opaque dir hides the lower layer");
        assert_eq!(std::fs::read_to_string(root.join("var/x/new")).unwrap(), "n");
    }

    #[test]
    fn configs_and_members() {
        let c =
            parse_config(br#"{"config":{"Cmd":["sh"],"Env":["A=1"],"ExposedPorts":{"80/tcp":{}},"WorkingDir":"/w"}}"#)
                .unwrap();
        assert_eq!(
            (c.cmd, c.env, c.exposed_ports, c.working_dir),
            (vec!["sh".into()], vec!["A=1".into()], vec!["80/tcp".into()], "/w".into())
        );
        assert!(parse_config(b"[]").is_err());
        assert!(member(Path::new("/x"), "../etc/passwd").is_err());
        assert!(member(Path::new("/x"), "/etc/passwd").is_err());
        assert_eq!(member(Path::new("/x"), "abc/layer.tar").unwrap(), PathBuf::from("/x/abc/layer.tar"));
    }
}
