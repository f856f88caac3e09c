//! Offline breached-password screening: a binary fuse filter (`xorf`'s `BinaryFuse8`, about
//! 9 bits per entry, no false negatives, about 0.4% false positives) of the SHA-1 hashes in a
//! Have I Been Pwned download, built once with `portcullis passwords build-filter` and loaded
//! at start-up from `passwords.breached_filter`.
//!
//! The whole HIBP corpus (about 900 million hashes) makes a filter of about 1 GiB; nothing is
//! asked of any network at run time. A key is the first 8 bytes of the SHA-1, big-endian.
//!
//! File format (little-endian): the magic `PCBF\x00\x01\r\n`; the entry count (u64); the
//! filter's seed (u64) and segment length, mask and count-length (3 × u32); the fingerprint
//! count (u64) and the fingerprints; then the SHA-256 of everything before it, so a truncated
//! or damaged file is refused at start-up instead of answering wrongly.

use std::fs::File;
use std::io::{BufRead, BufReader, BufWriter, Read, Write};
use std::path::Path;

use anyhow::{Context, bail, ensure};
use sha1::Sha1;
use sha2::{Digest, Sha256};
use xorf::{BinaryFuse8, Filter};

const MAGIC: &[u8; 8] = b"PCBF\x00\x01\r\n";
const HEADER_BYTES: usize = 8 + 8 + 8 + 4 * 3 + 8;
const CHECKSUM_BYTES: usize = 32;

/// A loaded breached-password filter.
pub struct BreachedFilter {
    filter: BinaryFuse8,
    entries: u64,
}

/// What building a filter read and wrote.
#[derive(Debug, PartialEq, Eq)]
pub struct BuildReport {
    /// Distinct hashes in the filter.
    pub entries: u64,
    /// Bytes of the filter file.
    pub bytes: u64,
}

impl BreachedFilter {
    /// Builds a filter from the hashes of a HIBP download (`HASH:COUNT` lines, 40 hex digits).
    pub fn from_hibp(input: impl BufRead) -> anyhow::Result<Self> {
        let mut keys = Vec::new();
        for (number, line) in input.lines().enumerate() {
            let line = line.with_context(|| format!("reading line {}", number + 1))?;
            let line = line.trim();
            if line.is_empty() {
                continue;
            }
            let hash = line.split(':').next().unwrap_or_default();
            keys.push(key_of_hex(hash).with_context(|| {
                format!(
                    "line {}: expected `SHA1HEX:COUNT` (the Have I Been Pwned format)",
                    number + 1
                )
            })?);
        }
        Self::from_keys(keys)
    }

    /// Builds a filter holding `keys` (duplicates are removed).
    fn from_keys(mut keys: Vec<u64>) -> anyhow::Result<Self> {
        keys.sort_unstable();
        keys.dedup();
        ensure!(!keys.is_empty(), "no hashes to put in the filter");
        let filter = BinaryFuse8::try_from(&keys)
            .map_err(|e| anyhow::anyhow!("building the filter: {e}"))?;
        Ok(Self {
            filter,
            entries: keys.len() as u64,
        })
    }

    /// Writes the filter to `path`.
    pub fn write(&self, path: &Path) -> anyhow::Result<BuildReport> {
        let d = &self.filter.descriptor;
        let mut header = Vec::with_capacity(HEADER_BYTES);
        header.extend_from_slice(MAGIC);
        header.extend_from_slice(&self.entries.to_le_bytes());
        header.extend_from_slice(&d.seed.to_le_bytes());
        header.extend_from_slice(&d.segment_length.to_le_bytes());
        header.extend_from_slice(&d.segment_length_mask.to_le_bytes());
        header.extend_from_slice(&d.segment_count_length.to_le_bytes());
        header.extend_from_slice(&(self.filter.fingerprints.len() as u64).to_le_bytes());
        let mut checksum = Sha256::new();
        checksum.update(&header);
        checksum.update(&self.filter.fingerprints);
        let file = File::create(path).with_context(|| format!("creating {}", path.display()))?;
        let mut out = BufWriter::new(file);
        out.write_all(&header)?;
        out.write_all(&self.filter.fingerprints)?;
        out.write_all(&checksum.finalize())?;
        out.flush()
            .with_context(|| format!("writing {}", path.display()))?;
        Ok(BuildReport {
            entries: self.entries,
            bytes: (header.len() + self.filter.fingerprints.len() + CHECKSUM_BYTES) as u64,
        })
    }

    /// Loads a filter written by [`BreachedFilter::write`]; refuses a file of another format,
    /// a truncated one, or one whose checksum does not match.
    pub fn load(path: &Path) -> anyhow::Result<Self> {
        let mut bytes = Vec::new();
        File::open(path)
            .and_then(|mut f| f.read_to_end(&mut bytes))
            .with_context(|| format!("reading {}", path.display()))?;
        Self::parse(&bytes).with_context(|| {
            format!(
                "{} is not a breached-password filter made by `portcullis passwords \
                 build-filter`",
                path.display()
            )
        })
    }

    fn parse(bytes: &[u8]) -> anyhow::Result<Self> {
        ensure!(
            bytes.len() >= HEADER_BYTES + CHECKSUM_BYTES && bytes.starts_with(MAGIC),
            "wrong format (no filter header)"
        );
        let u64_at = |at: usize| {
            let mut b = [0u8; 8];
            b.copy_from_slice(&bytes[at..at + 8]);
            u64::from_le_bytes(b)
        };
        let u32_at = |at: usize| {
            let mut b = [0u8; 4];
            b.copy_from_slice(&bytes[at..at + 4]);
            u32::from_le_bytes(b)
        };
        let entries = u64_at(8);
        let fingerprints = usize::try_from(u64_at(36)).context("filter too large")?;
        let expected = HEADER_BYTES
            .checked_add(fingerprints)
            .and_then(|n| n.checked_add(CHECKSUM_BYTES));
        if expected != Some(bytes.len()) {
            bail!(
                "truncated or padded: {} bytes where the header announces {}",
                bytes.len(),
                expected.map_or_else(|| "too many".to_owned(), |n| n.to_string())
            );
        }
        let body = &bytes[..bytes.len() - CHECKSUM_BYTES];
        ensure!(
            Sha256::digest(body).as_slice() == &bytes[bytes.len() - CHECKSUM_BYTES..],
            "checksum mismatch (the file is damaged)"
        );
        let mut filter = BinaryFuse8::try_from(&[0u64][..])
            .map_err(|e| anyhow::anyhow!("preparing a filter: {e}"))?;
        filter.descriptor.seed = u64_at(16);
        filter.descriptor.segment_length = u32_at(24);
        filter.descriptor.segment_length_mask = u32_at(28);
        filter.descriptor.segment_count_length = u32_at(32);
        filter.fingerprints = body[HEADER_BYTES..].into();
        Ok(Self { filter, entries })
    }

    /// Distinct hashes the filter was built from.
    pub fn entries(&self) -> u64 {
        self.entries
    }

    /// Whether the filter (probably) holds the SHA-1 of `password`.
    pub fn contains_password(&self, password: &str) -> bool {
        let digest = Sha1::digest(password.as_bytes());
        self.contains_key(key_of_digest(&digest))
    }

    /// Whether the filter (probably) holds a hash whose first 8 bytes are `key`.
    pub fn contains_key(&self, key: u64) -> bool {
        self.filter.contains(&key)
    }
}

/// Builds the filter of a HIBP file (`portcullis passwords build-filter`).
pub fn build_filter(input: &Path, output: &Path) -> anyhow::Result<BuildReport> {
    let file = File::open(input).with_context(|| format!("reading {}", input.display()))?;
    let filter = BreachedFilter::from_hibp(BufReader::with_capacity(1 << 20, file))
        .with_context(|| format!("reading {}", input.display()))?;
    filter.write(output)
}

fn key_of_digest(digest: &[u8]) -> u64 {
    let mut first = [0u8; 8];
    first.copy_from_slice(&digest[..8]);
    u64::from_be_bytes(first)
}

/// The key of a hex SHA-1 (either case); `None` unless it is exactly 40 hex digits.
pub fn key_of_hex(hash: &str) -> Option<u64> {
    if hash.len() != 40 || !hash.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    u64::from_str_radix(&hash[..16], 16).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hibp_line(password: &str, count: u32) -> String {
        format!(
            "{}:{count}",
            hex::encode_upper(Sha1::digest(password.as_bytes()))
        )
    }

    #[test]
    fn a_written_filter_loads_and_holds_its_passwords() {
        let lines = [
            hibp_line("password", 9_000_000),
            hibp_line("hunter2", 17_000),
        ];
        let filter = BreachedFilter::from_hibp(lines.join("\r\n").as_bytes()).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("breached.bin");
        let report = filter.write(&path).unwrap();
        assert_eq!(report.entries, 2);
        let loaded = BreachedFilter::load(&path).unwrap();
        assert!(loaded.contains_password("password") && loaded.contains_password("hunter2"));
        assert!(!loaded.contains_password("correct horse battery staple"));
    }

    #[test]
    fn truncated_damaged_and_foreign_files_are_refused() {
        let filter = BreachedFilter::from_hibp(hibp_line("x", 1).as_bytes()).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f.bin");
        filter.write(&path).unwrap();
        let bytes = std::fs::read(&path).unwrap();
        std::fs::write(&path, &bytes[..bytes.len() - 5]).unwrap();
        let err = format!("{:#}", BreachedFilter::load(&path).err().unwrap());
        assert!(err.contains("truncated"), "{err}");
        let mut damaged = bytes.clone();
        damaged[HEADER_BYTES] ^= 1;
        std::fs::write(&path, &damaged).unwrap();
        let err = format!("{:#}", BreachedFilter::load(&path).err().unwrap());
        assert!(err.contains("checksum"), "{err}");
        std::fs::write(&path, b"21BD12DC183F740EE76F27B78EB39C8AD972A757:3\n").unwrap();
        let err = format!("{:#}", BreachedFilter::load(&path).err().unwrap());
        assert!(err.contains("wrong format"), "{err}");
    }

    #[test]
    fn lines_not_in_the_hibp_format_name_their_line() {
        let err = BreachedFilter::from_hibp("ABC:1\n".as_bytes())
            .err()
            .unwrap();
        assert!(format!("{err:#}").contains("line 1"), "{err:#}");
        assert_eq!(key_of_hex(&"g".repeat(40)), None);
    }
}
