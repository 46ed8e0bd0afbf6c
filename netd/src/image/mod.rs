//! Images: rootfs directories under `<data-root>/images/<id>/rootfs` plus a
//! record in the store (tags and config: cmd, entrypoint, env, working dir,
//! exposed ports, user, labels). An image's id is the sha256 of its config and
//! of the content it was made from, so importing the same thing twice gives
//! the same id. Writes are ordered so that a crash leaves no half image: unpack
//! into `tmp-*`, rename to the id, then commit the record; [`ImageStore::clean`]
//! removes directories without a record at start.

mod busybox;
pub mod load;
mod reference;
mod unpack;

use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

pub use busybox::{HOST_BUSYBOX, build_rootfs, is_static_elf};
pub use reference::{Reference, parse_change};

use crate::ids::ImageId;
use crate::store::{Store, StoreError};

/// An image failure.
#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    #[error("No such image: {0}")]
    NotFound(String),
    #[error("invalid reference format: {0}")]
    BadReference(String),
    #[error("invalid archive: {0}")]
    BadArchive(String),
    #[error("invalid change {0}")]
    BadChange(String),
    #[error("conflict: {0}")]
    Conflict(String),
    #[error("image storage: {0}")]
    Io(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// The runtime configuration an image carries (Docker's `Config` subset).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageConfig {
    pub cmd: Vec<String>,
    pub entrypoint: Vec<String>,
    pub env: Vec<String>,
    pub working_dir: String,
    pub user: String,
    /// `80/tcp`-style keys.
    pub exposed_ports: Vec<String>,
    pub labels: BTreeMap<String, String>,
}

/// An image as the store keeps it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageRecord {
    pub id: ImageId,
    /// `name:tag` references pointing at this image.
    pub tags: Vec<String>,
    /// RFC 3339 creation time.
    pub created: String,
    pub comment: String,
    pub config: ImageConfig,
    /// Bytes of the unpacked rootfs.
    pub size: u64,
}

impl crate::store::Record for ImageRecord {
    const KIND: &'static str = "image";
    const TABLE: redb::TableDefinition<'static, &'static str, &'static [u8]> = redb::TableDefinition::new("images");
    fn key(&self) -> String {
        self.id.to_string()
    }
}

fn dir_size(p: &Path) -> u64 {
    match std::fs::symlink_metadata(p) {
        Ok(m) if m.is_dir() => {
            std::fs::read_dir(p).map(|d| d.flatten().map(|e| dir_size(&e.path())).sum()).unwrap_or(0)
        }
        Ok(m) => m.len(),
        Err(_) => 0,
    }
}

/// Hashes what it reads.
struct HashingReader<R> {
    inner: R,
    hash: Sha256,
}

impl<R: Read> Read for HashingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hash.update(&buf[..n]);
        Ok(n)
    }
}

fn image_id(config: &ImageConfig, content_digest: &[u8]) -> ImageId {
    let mut h = Sha256::new();
    h.update(serde_json::to_vec(config).unwrap_or_default());
    h.update(content_digest);
    let hex: String = h.finalize().iter().map(|b| format!("{b:02x}")).collect();
    ImageId::parse(&hex).unwrap_or_else(|_| ImageId::random())
}

/// Images on disk and in the store.
#[derive(Clone, Debug)]
pub struct ImageStore {
    root: PathBuf,
    store: Store,
}

impl ImageStore {
    /// Images under `root` (created if missing), records in `store`.
    pub fn open(root: PathBuf, store: Store) -> Result<ImageStore, ImageError> {
        std::fs::create_dir_all(&root).map_err(|e| ImageError::Io(format!("create {}: {e}", root.display())))?;
        Ok(ImageStore { root, store })
    }

    /// The rootfs directory of an image.
    pub fn rootfs(&self, id: &ImageId) -> PathBuf {
        self.root.join(id.as_str()).join("rootfs")
    }

    /// A fresh path for an upload in progress (removed by [`ImageStore::clean`]
    /// if netd dies before the import finishes).
    pub fn upload_path(&self) -> PathBuf {
        self.root.join(format!("upload-{}", ImageId::random().short()))
    }

    /// All images.
    pub fn list(&self) -> Result<Vec<ImageRecord>, ImageError> {
        Ok(self.store.all::<ImageRecord>()?)
    }

    /// Finds an image by `name[:tag]`, `sha256:<id>`, full id or id prefix.
    pub fn resolve(&self, name: &str) -> Result<ImageRecord, ImageError> {
        let all = self.list()?;
        let hex = name.strip_prefix("sha256:").unwrap_or(name);
        if let Ok(r) = Reference::parse(name) {
            let tag = r.to_string();
            if let Some(i) = all.iter().find(|i| i.tags.contains(&tag)) {
                return Ok(i.clone());
            }
        }
        let lower_hex = !hex.is_empty() && hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'));
        if lower_hex {
            let matches: Vec<_> = all.iter().filter(|i| i.id.as_str().starts_with(hex)).collect();
            match matches.as_slice() {
                [one] => return Ok((*one).clone()),
                [] => {}
                _ => return Err(ImageError::Conflict(format!("image id prefix {hex} is ambiguous"))),
            }
        }
        Err(ImageError::NotFound(name.to_owned()))
    }

    /// Removes image directories that have no record (interrupted imports).
    pub fn clean(&self) -> Result<usize, ImageError> {
        let known: Vec<String> = self.list()?.into_iter().map(|i| i.id.to_string()).collect();
        let mut removed = 0;
        let entries = std::fs::read_dir(&self.root).map_err(|e| ImageError::Io(e.to_string()))?;
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if !known.contains(&name) && std::fs::remove_dir_all(e.path()).is_ok() {
                tracing::info!(dir = %name, "removed leftover image directory");
                removed += 1;
            }
        }
        Ok(removed)
    }

    fn staging(&self) -> Result<PathBuf, ImageError> {
        let dir = self.root.join(format!("tmp-{}", ImageId::random().short()));
        std::fs::create_dir_all(dir.join("rootfs"))
            .map_err(|e| ImageError::Io(format!("create {}: {e}", dir.display())))?;
        Ok(dir)
    }

    /// Moves a staged rootfs into place and records the image, moving `tag`
    /// from any image that had it. Identical content re-uses the existing id.
    fn commit(&self, staged: &Path, mut rec: ImageRecord) -> Result<ImageRecord, ImageError> {
        let final_dir = self.root.join(rec.id.as_str());
        let existing = self.store.get::<ImageRecord>(rec.id.as_str())?;
        if existing.is_some() {
            let _ = std::fs::remove_dir_all(staged);
        } else {
            std::fs::rename(staged, &final_dir)
                .map_err(|e| ImageError::Io(format!("rename {} -> {}: {e}", staged.display(), final_dir.display())))?;
        }
        let mut changed = Vec::new();
        for mut other in self.list()? {
            if other.id != rec.id && rec.tags.iter().any(|t| other.tags.contains(t)) {
                other.tags.retain(|t| !rec.tags.contains(t));
                changed.push(other);
            }
        }
        if let Some(old) = existing {
            for t in old.tags {
                if !rec.tags.contains(&t) {
                    rec.tags.push(t);
                }
            }
            rec.created = old.created;
        }
        changed.push(rec.clone());
        self.store.put_all(&changed)?;
        Ok(rec)
    }

    /// Imports a rootfs tarball (plain or gzip) as an image.
    pub fn import(
        &self,
        input: impl Read,
        tag: Option<&Reference>,
        config: ImageConfig,
        comment: &str,
    ) -> Result<ImageRecord, ImageError> {
        let staged = self.staging()?;
        let mut reader = HashingReader { inner: input, hash: Sha256::new() };
        let result = unpack::unpack(&mut reader, &staged.join("rootfs"));
        // Drain what the tar reader left (padding), so the digest covers it all.
        let _ = std::io::copy(&mut reader, &mut std::io::sink());
        let size = match result {
            Ok(size) => size,
            Err(e) => {
                let _ = std::fs::remove_dir_all(&staged);
                return Err(e);
            }
        };
        let digest = reader.hash.finalize();
        let rec = ImageRecord {
            id: image_id(&config, &digest),
            tags: tag.map(|t| vec![t.to_string()]).unwrap_or_default(),
            created: jiff::Timestamp::now().to_string(),
            comment: comment.to_owned(),
            config,
            size,
        };
        let out = self.commit(&staged, rec);
        if out.is_err() {
            let _ = std::fs::remove_dir_all(&staged);
        }
        out
    }

    /// Loads a `docker save` tarball: every image of its manifest, with its
    /// tags. Returns the loaded images.
    pub fn load(&self, input: impl Read) -> Result<Vec<ImageRecord>, ImageError> {
        let outer = self.staging()?;
        let result = (|| {
            unpack::unpack(input, &outer.join("rootfs"))?;
            let root = outer.join("rootfs");
            let manifest = std::fs::read(root.join("manifest.json"))
                .map_err(|_| ImageError::BadArchive("no manifest.json: not a `docker save` archive".into()))?;
            let entries: Vec<load::ManifestEntry> =
                serde_json::from_slice(&manifest).map_err(|e| ImageError::BadArchive(format!("manifest.json: {e}")))?;
            if entries.is_empty() {
                return Err(ImageError::BadArchive("manifest.json lists no image".into()));
            }
            let mut out = Vec::new();
            for entry in entries {
                let config_bytes = std::fs::read(load::member(&root, &entry.config)?)
                    .map_err(|e| ImageError::BadArchive(format!("{}: {e}", entry.config)))?;
                let config = load::parse_config(&config_bytes)?;
                let tags = entry
                    .repo_tags
                    .unwrap_or_default()
                    .iter()
                    .map(|t| Reference::parse(t).map(|r| r.to_string()).map_err(ImageError::BadReference))
                    .collect::<Result<Vec<_>, _>>()?;
                let staged = self.staging()?;
                let applied = (|| {
                    for layer in &entry.layers {
                        let f = std::fs::File::open(load::member(&root, layer)?)
                            .map_err(|e| ImageError::BadArchive(format!("{layer}: {e}")))?;
                        load::apply_layer(f, &staged.join("rootfs"))?;
                    }
                    Ok(())
                })();
                if let Err(e) = applied {
                    let _ = std::fs::remove_dir_all(&staged);
                    return Err(e);
                }
                let rec = ImageRecord {
                    id: image_id(&config, &Sha256::digest(&config_bytes)),
                    tags,
                    created: jiff::Timestamp::now().to_string(),
                    comment: "loaded from a docker save archive".into(),
                    config,
                    size: dir_size(&staged.join("rootfs")),
                };
                out.push(self.commit(&staged, rec)?);
            }
            Ok(out)
        })();
        let _ = std::fs::remove_dir_all(&outer);
        result
    }

    /// Adds tag `tag` to the image `name` (moving it from any other image).
    pub fn tag(&self, name: &str, tag: &Reference) -> Result<(), ImageError> {
        let mut img = self.resolve(name)?;
        let t = tag.to_string();
        let mut changed = Vec::new();
        for mut other in self.list()? {
            if other.id != img.id && other.tags.contains(&t) {
                other.tags.retain(|x| *x != t);
                changed.push(other);
            }
        }
        if !img.tags.contains(&t) {
            img.tags.push(t);
        }
        changed.push(img);
        self.store.put_all(&changed)?;
        Ok(())
    }

    /// Creates `busybox:latest` from the host's static busybox, if there is
    /// none yet and the host has one. Returns the new image.
    pub fn ensure_busybox(&self, busybox: &Path) -> Result<Option<ImageRecord>, ImageError> {
        let tag = Reference::parse("busybox").map_err(ImageError::BadReference)?;
        if self.resolve(&tag.to_string()).is_ok() || !busybox.exists() {
            return Ok(None);
        }
        let staged = self.staging()?;
        if let Err(e) = build_rootfs(busybox, &staged.join("rootfs")) {
            let _ = std::fs::remove_dir_all(&staged);
            return Err(e);
        }
        let bytes = std::fs::read(busybox).map_err(|e| ImageError::Io(e.to_string()))?;
        let config = ImageConfig {
            cmd: vec!["sh".into()],
            env: vec!["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".into()],
            ..Default::default()
        };
        let rec = ImageRecord {
            id: image_id(&config, &Sha256::digest(&bytes)),
            tags: vec![tag.to_string()],
            created: jiff::Timestamp::now().to_string(),
            comment: format!("built by netd from {}", busybox.display()),
            config,
            size: bytes.len() as u64,
        };
        self.commit(&staged, rec).map(Some)
    }

    /// Removes a tag, or the whole image when `name` is its id or its last
    /// tag. Returns Docker's `[{"Untagged": ..}, {"Deleted": ..}]` items.
    /// `in_use` says whether a container uses the image.
    pub fn remove(&self, name: &str, force: bool, in_use: bool) -> Result<Vec<(String, String)>, ImageError> {
        let mut img = self.resolve(name)?;
        let by_tag = Reference::parse(name).ok().map(|r| r.to_string()).filter(|t| img.tags.contains(t));
        let mut out = Vec::new();
        if let Some(tag) = by_tag
            && img.tags.len() > 1
        {
            img.tags.retain(|t| *t != tag);
            self.store.put_all(std::slice::from_ref(&img))?;
            out.push(("Untagged".to_owned(), tag));
            return Ok(out);
        }
        if img.tags.len() > 1 && !force {
            return Err(ImageError::Conflict(format!(
                "unable to delete {} (must be forced) - image is referenced in multiple repositories",
                img.id.short()
            )));
        }
        if in_use && !force {
            return Err(ImageError::Conflict(format!(
                "unable to delete {} (cannot be forced) - image is being used by a container",
                img.id.short()
            )));
        }
        self.store.remove::<ImageRecord>(img.id.as_str())?;
        let _ = std::fs::remove_dir_all(self.root.join(img.id.as_str()));
        out.extend(img.tags.iter().map(|t| ("Untagged".to_owned(), t.clone())));
        out.push(("Deleted".to_owned(), format!("sha256:{}", img.id)));
        Ok(out)
    }
}

#[cfg(test)]
mod tests;
