//! Deletion candidates wait in a temporary file until the source listing has completed, so `--delete`
//! costs disk, not memory, however many target objects are to go.

use crate::error::{Error, Result};
use crate::external_sort::{read_str, temp_file, write_str};
use std::fs::File;
use std::io::{BufReader, BufWriter, Seek, SeekFrom};

/// An append-only list of keys (each with the ETag a conditional delete sends) on disk.
pub struct Spill {
    file: Option<BufWriter<File>>,
    count: u64,
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
