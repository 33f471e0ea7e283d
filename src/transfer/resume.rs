//! The resume journal: one small file per multipart upload in flight, so that after a crash
//! (`kill -9`, power loss) the next run either resumes that upload — reusing every part already on the
//! server whose ETag matches the bytes — or aborts it. Uploads are only ever resumed or aborted when
//! the journal says they are ours; other clients' uploads are never touched.

use std::path::{Path, PathBuf};

/// Where journal records live (`$S3SYNC_STATE_DIR`, else `~/.cache/s3sync/resume`).
#[derive(Debug, Clone)]
pub struct Journal {
    dir: PathBuf,
}

/// One multipart upload of ours, stored as one line of JSON.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct UploadRecord {
    /// The upload id.
    pub upload_id: String,
    /// Object size.
    pub size: u64,
    /// Identity of the source bytes (local: size and mtime; S3: the source ETag).
    pub source_id: String,
    /// Part size of the upload.
    pub part_size: u64,
    /// Target bucket.
    pub bucket: String,
    /// Target key (full, with the prefix).
    pub key: String,
    /// The run that started the upload ([`crate::owner::Owner::token`]).
    #[serde(default)]
    pub owner: String,
}

impl UploadRecord {
    /// Whether the run that wrote this record (the file at `path`) may still be working on the upload
    /// (alive, or not provably dead), so that nobody else may resume or abort it. Records of versions
    /// before owners were recorded count as dead once they are older than this boot or a week.
    pub fn owned_by_live_run(&self, path: &Path) -> bool {
        if crate::owner::Owner::parse(&self.owner).is_some_and(|o| o.is_me()) {
            return false;
        }
        let written = std::fs::metadata(path).and_then(|m| m.modified()).ok();
        !crate::owner::leftover_is_dead(&self.owner, written)
    }
}

impl Journal {
    /// The default journal, when its directory can be created.
    pub fn open_default() -> Option<Journal> {
        let dir = std::env::var_os("S3SYNC_STATE_DIR")
            .map(PathBuf::from)
            .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache/s3sync/resume")))?;
        Journal::open(dir)
    }

    /// A journal in `dir` (created if needed).
    pub fn open(dir: PathBuf) -> Option<Journal> {
        std::fs::create_dir_all(&dir).ok()?;
        Some(Journal { dir })
    }

    /// The record file of an upload target (endpoint-independent: bucket and full key).
    pub fn path_for(&self, bucket: &str, full_key: &str) -> PathBuf {
        let id = crate::checksum::md5_of(format!("{bucket}\0{full_key}").as_bytes());
        self.dir.join(format!("{}.upload", hex::encode(id)))
    }

    /// Reads a record, if any: a line of JSON, or the positional lines earlier versions wrote (so an
    /// upload they left is still resumed or aborted).
    pub fn load(path: &Path) -> Option<UploadRecord> {
        let text = std::fs::read_to_string(path).ok()?;
        if text.starts_with('{') {
            return serde_json::from_str(text.trim_end()).ok();
        }
        let mut l = text.lines();
        Some(UploadRecord {
            upload_id: l.next()?.to_string(),
            size: l.next()?.parse().ok()?,
            source_id: l.next()?.to_string(),
            part_size: l.next()?.parse().ok()?,
            bucket: l.next()?.to_string(),
            key: String::from_utf8(hex::decode(l.next()?).ok()?).ok()?,
            owner: l.next().unwrap_or_default().to_string(),
        })
    }

    /// Writes a record atomically and durably (temp file, fsync, rename, fsync of the directory).
    pub fn save(path: &Path, r: &UploadRecord) -> std::io::Result<()> {
        use std::io::Write;
        let tmp = path.with_extension("tmp");
        let mut text = serde_json::to_string(r).map_err(std::io::Error::other)?;
        text.push('\n');
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(text.as_bytes())?;
        f.sync_all()?;
        std::fs::rename(tmp, path)?;
        if let Some(dir) = path.parent() {
            std::fs::File::open(dir)?.sync_all()?;
        }
        Ok(())
    }

    /// Every record in the journal.
    pub fn records(&self) -> Vec<(PathBuf, UploadRecord)> {
        let Ok(rd) = std::fs::read_dir(&self.dir) else {
            return Vec::new();
        };
        rd.filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "upload"))
            .filter_map(|p| Journal::load(&p).map(|r| (p, r)))
            .collect()
    }

    /// Removes a record (the upload completed or was aborted).
    pub fn remove(path: &Path) {
        let _ = std::fs::remove_file(path);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let j = Journal::open(dir.path().to_path_buf()).unwrap();
        let p = j.path_for("b", "k/ü");
        assert_ne!(p, j.path_for("b", "k/u"));
        assert_eq!(Journal::load(&p), None);
        let r = UploadRecord {
            upload_id: "id-1".into(),
            size: 10,
            source_id: "10-123".into(),
            part_size: 5,
            bucket: "b".into(),
            key: "k/ü\nx".into(),
            owner: crate::owner::Owner::current().token(),
        };
        assert!(!r.owned_by_live_run(&p), "our own record");
        Journal::save(&p, &r).unwrap();
        assert_eq!(Journal::load(&p), Some(r.clone()));
        assert_eq!(j.records(), vec![(p.clone(), r)]);
        assert!(std::fs::read_to_string(&p)
            .unwrap()
            .starts_with("{\"upload_id\":\"id-1\""));
        Journal::remove(&p);
        assert_eq!(Journal::load(&p), None);
    }

    /// A record in the positional format of earlier versions is still read.
    #[test]
    fn positional_records_are_read() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("x.upload");
        std::fs::write(&p, format!("id-2\n20\n20-1\n5\nb\n{}\nrun-1\n", hex::encode("k/ü"))).unwrap();
        let r = Journal::load(&p).unwrap();
        assert_eq!((r.upload_id.as_str(), r.size, r.part_size), ("id-2", 20, 5));
        assert_eq!((r.key.as_str(), r.owner.as_str()), ("k/ü", "run-1"));
    }
}
