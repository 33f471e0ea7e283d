//! Deletion candidates wait in a temporary file until the source listing has completed, so `--delete`
//! costs disk, not memory, however many target objects are to go. The temporary-file and record
//! helpers here serve the on-disk sort of unordered listings too.

use crate::error::{Error, Result};
use std::fs::File;
use std::io::{BufReader, BufWriter, Read, Seek, SeekFrom, Write};

/// An append-only list of keys (each with the ETag a conditional delete sends) on disk.
pub struct Spill {
    file: Option<BufWriter<File>>,
    count: u64,
}

/// A new temporary file, removed when closed (or at a crash: it has no name).
pub(crate) fn temp_file() -> Result<File> {
    tempfile::tempfile().map_err(|e| Error::local("create", std::env::temp_dir(), e))
}

/// Writes `s` as a record field: its length (u32, little-endian), then its bytes.
pub(crate) fn write_str(w: &mut impl Write, s: &str) -> std::io::Result<()> {
    let len = u32::try_from(s.len()).map_err(|_| std::io::Error::other("field longer than 4 GiB"))?;
    w.write_all(&len.to_le_bytes())?;
    w.write_all(s.as_bytes())
}

/// Reads a field written by [`write_str`]; `None` at the end of the file (before its length).
pub(crate) fn read_str(r: &mut impl Read) -> std::io::Result<Option<String>> {
    let mut len = [0u8; 4];
    match r.read_exact(&mut len) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e),
    }
    let mut buf = vec![0u8; u32::from_le_bytes(len) as usize];
    r.read_exact(&mut buf)?;
    String::from_utf8(buf)
        .map(Some)
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))
}

impl Spill {
    /// A spill file, created only when `enabled`.
    pub fn new(enabled: bool) -> Result<Self> {
        let file = if enabled {
            Some(BufWriter::new(temp_file()?))
        } else {
            None
        };
        Ok(Spill { file, count: 0 })
    }

    /// Appends a key and, for `--if-match`, the target ETag it was listed with.
    pub fn push(&mut self, key: &str, etag: Option<&str>) -> Result<()> {
        let Some(f) = self.file.as_mut() else { return Ok(()) };
        for field in [key, etag.unwrap_or("")] {
            write_str(f, field).map_err(|e| Error::local("write", "deletion list", e))?;
        }
        self.count += 1;
        Ok(())
    }

    /// Reads the keys (and ETags) back, in the order pushed.
    pub fn drain(&mut self) -> Result<impl Iterator<Item = Result<(String, Option<String>)>>> {
        let io = |e| Error::local("read", "deletion list", e);
        let reader = match self.file.take() {
            Some(w) => {
                let mut f = w.into_inner().map_err(|e| io(e.into_error()))?;
                f.seek(SeekFrom::Start(0)).map_err(io)?;
                Some(BufReader::new(f))
            }
            None => None,
        };
        let mut remaining = self.count;
        let mut reader = reader;
        Ok(std::iter::from_fn(move || {
            if remaining == 0 {
                return None;
            }
            remaining -= 1;
            let r = reader.as_mut()?;
            let mut field = || -> Result<String> {
                read_str(r)
                    .map_err(io)?
                    .ok_or_else(|| io(std::io::ErrorKind::UnexpectedEof.into()))
            };
            Some(field().and_then(|key| Ok((key, Some(field()?).filter(|e| !e.is_empty())))))
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_keys() {
        let mut s = Spill::new(true).unwrap();
        for (k, e) in [("a", None), ("dir/ü b", Some("etag")), ("", None)] {
            s.push(k, e).unwrap();
        }
        let keys: Vec<(String, Option<String>)> = s.drain().unwrap().map(|k| k.unwrap()).collect();
        assert_eq!(
            keys,
            vec![
                ("a".into(), None),
                ("dir/ü b".into(), Some("etag".into())),
                ("".into(), None)
            ]
        );
    }
}
