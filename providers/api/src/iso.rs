//! A small, dependency-free ISO 9660 image writer, for cloud-init NoCloud seed images
//! (volume label `cidata`, files `user-data`, `meta-data`, `network-config`).
//!
//! The image has one flat root directory, described by two hierarchies sharing the file data:
//!
//! - the primary hierarchy, with ISO 9660 level 1 names (`USER_DAT.;1`) and Rock Ridge
//!   (RRIP 1.10) System Use entries giving each file its exact name (`NM`) and POSIX mode
//!   (`PX`: 0444 files, 0555 directories); the root's `.` record starts with the SUSP `SP`
//!   entry and points (`CE`) at a continuation area holding the `ER` entry, which is what
//!   makes Linux prefer Rock Ridge over Joliet;
//! - a Joliet supplementary hierarchy with UCS-2 big-endian names (used under `norock`).
//!
//! All timestamps are 1970-01-01 00:00:00 UTC, so equal input gives identical bytes.
//! Layout, in 2048-byte sectors:
//!
//! | sector | content                                                               |
//! |--------|-----------------------------------------------------------------------|
//! | 0–15   | system area (zeros)                                                   |
//! | 16     | primary volume descriptor                                             |
//! | 17     | Joliet supplementary volume descriptor                                |
//! | 18     | volume descriptor set terminator                                      |
//! | 19, 20 | primary path table, L (little-endian) then M (big-endian)             |
//! | 21, 22 | Joliet path table, L then M                                           |
//! | 23     | Rock Ridge continuation area (the `ER` entry)                         |
//! | 24…    | primary root directory, then Joliet root directory (≥ 1 sector each)  |
//! | …      | file data in argument order, each file from a sector boundary         |
//!
//! Records never cross a sector boundary; empty files have extent location 0.

use std::collections::BTreeSet;

/// Size of a logical sector (and block) in bytes.
const SECTOR: usize = 2048;
/// Longest file name accepted, in bytes (Joliet allows 64 UCS-2 characters).
pub const MAX_NAME_LEN: usize = 64;
/// Longest volume identifier accepted.
pub const MAX_VOLUME_ID_LEN: usize = 32;
/// Most files accepted in one image.
pub const MAX_FILES: usize = 256;
/// Largest image accepted, in bytes (4 GiB: sizes are 32-bit fields).
pub const MAX_IMAGE_BYTES: u64 = 1 << 32;

const PVD_LBA: u32 = 16;
const SVD_LBA: u32 = 17;
const TERMINATOR_LBA: u32 = 18;
const PRIMARY_PATH_TABLE_LBA: u32 = 19;
const JOLIET_PATH_TABLE_LBA: u32 = 21;
const CONTINUATION_LBA: u32 = 23;
const ROOT_LBA: u32 = 24;

/// Directory record date: 1970-01-01 00:00:00, GMT offset 0.
const RECORD_DATE: [u8; 7] = [70, 1, 1, 0, 0, 0, 0];
/// Volume descriptor date: 1970-01-01 00:00:00.00, GMT offset 0.
const DESCRIPTOR_DATE: &[u8; 17] = b"1970010100000000\0";
/// Volume descriptor "date not specified".
const NO_DATE: &[u8; 17] = b"0000000000000000\0";

const FILE_MODE: u32 = 0o100_444;
const DIR_MODE: u32 = 0o040_555;
/// `RR` entry flags: a `PX` entry / an `NM` entry is recorded.
const RR_PX: u8 = 0x01;
const RR_NM: u8 = 0x08;
const ER_ID: &str = "RRIP_1991A";
const ER_DESCRIPTION: &str =
    "THE ROCK RIDGE INTERCHANGE PROTOCOL PROVIDES SUPPORT FOR POSIX FILE SYSTEM SEMANTICS";
const ER_SOURCE: &str = "PLEASE CONTACT DISC PUBLISHER FOR SPECIFICATION SOURCE.  SEE PUBLISHER \
                         IDENTIFIER IN PRIMARY VOLUME DESCRIPTOR FOR CONTACT INFORMATION.";

/// One file in the image's root directory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IsoFile<'a> {
    /// File name: 1 to 64 bytes of ASCII letters, digits, `.`, `_` and `-`; not `.` or `..`.
    pub name: &'a str,
    /// File contents.
    pub data: &'a [u8],
}

/// Why an image could not be built.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IsoError {
    /// The volume identifier is empty, too long or has a character outside `[A-Za-z0-9_-]`.
    #[error("invalid volume identifier {id:?}: {reason}")]
    InvalidVolumeId {
        /// The rejected identifier.
        id: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// A file name is empty, too long, reserved or has a disallowed character.
    #[error("invalid file name {name:?}: {reason}")]
    InvalidFileName {
        /// The rejected name.
        name: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// Two files have the same name.
    #[error("duplicate file name {0:?}")]
    DuplicateFileName(String),
    /// More than [`MAX_FILES`] files.
    #[error("too many files: {0} (at most {MAX_FILES})")]
    TooManyFiles(usize),
    /// The image would exceed [`MAX_IMAGE_BYTES`].
    #[error("image would be {0} bytes, over the 4 GiB limit")]
    ImageTooLarge(u64),
}

/// Builds an ISO 9660 image with the given volume identifier and files in its root directory.
///
/// The volume identifier is written verbatim (`cidata` stays lowercase, as with genisoimage).
/// The result is deterministic: equal arguments give identical bytes.
pub fn build(volume_id: &str, files: &[IsoFile<'_>]) -> Result<Vec<u8>, IsoError> {
    check_volume_id(volume_id)?;
    check_files(files)?;
    let primary = Directory::new(primary_records(files, &level1_names(files)?));
    let joliet = Directory::new(joliet_records(files));
    let primary_root = (ROOT_LBA, primary.size);
    let joliet_root = (ROOT_LBA + primary.sectors(), joliet.size);
    let lens: Vec<u64> = files.iter().map(|file| file.data.len() as u64).collect();
    let (extents, sectors) = allocate(&lens, joliet_root.0 + joliet.sectors())?;

    let mut image = vec![0; sectors as usize * SECTOR];
    let pvd = volume_descriptor(false, volume_id, sectors, primary_root);
    put(&mut image, at(PVD_LBA), &pvd);
    let svd = volume_descriptor(true, volume_id, sectors, joliet_root);
    put(&mut image, at(SVD_LBA), &svd);
    put(&mut image, at(TERMINATOR_LBA), b"\xffCD001\x01");
    path_tables(&mut image, PRIMARY_PATH_TABLE_LBA, ROOT_LBA);
    path_tables(&mut image, JOLIET_PATH_TABLE_LBA, joliet_root.0);
    put(&mut image, at(CONTINUATION_LBA), &er());
    primary.write(&mut image, primary_root, &extents);
    joliet.write(&mut image, joliet_root, &extents);
    for (file, &(lba, _)) in files.iter().zip(&extents) {
        put(&mut image, at(lba), file.data);
    }
    Ok(image)
}

fn check_volume_id(id: &str) -> Result<(), IsoError> {
    let reason = if id.is_empty() {
        "empty"
    } else if id.len() > MAX_VOLUME_ID_LEN {
        "longer than 32 characters"
    } else if !only_alphanumeric_and(id, b"_-") {
        "only ASCII letters, digits, '_' and '-' are allowed"
    } else {
        return Ok(());
    };
    let id = id.to_owned();
    Err(IsoError::InvalidVolumeId { id, reason })
}

fn only_alphanumeric_and(s: &str, extra: &[u8]) -> bool {
    s.bytes()
        .all(|b| b.is_ascii_alphanumeric() || extra.contains(&b))
}

fn check_files(files: &[IsoFile<'_>]) -> Result<(), IsoError> {
    if files.len() > MAX_FILES {
        return Err(IsoError::TooManyFiles(files.len()));
    }
    let mut seen = BTreeSet::new();
    for &IsoFile { name, .. } in files {
        let reason = if name.is_empty() {
            "empty"
        } else if name.len() > MAX_NAME_LEN {
            "longer than 64 bytes"
        } else if name == "." || name == ".." {
            "reserved"
        } else if !only_alphanumeric_and(name, b"._-") {
            "only ASCII letters, digits, '.', '_' and '-' are allowed"
        } else if !seen.insert(name) {
            return Err(IsoError::DuplicateFileName(name.to_owned()));
        } else {
            continue;
        };
        let name = name.to_owned();
        return Err(IsoError::InvalidFileName { name, reason });
    }
    Ok(())
}

/// Level 1 names as (stem, extension): at most 8 and 3 d-characters, unique in the image.
fn level1_names(files: &[IsoFile<'_>]) -> Result<Vec<(String, String)>, IsoError> {
    let d_char = |c: char| match c {
        'a'..='z' | 'A'..='Z' | '0'..='9' => c.to_ascii_uppercase(),
        _ => '_',
    };
    let d_chars = |s: &str, max| s.chars().take(max).map(d_char).collect::<String>();
    let mut used = BTreeSet::new();
    let mut names = Vec::with_capacity(files.len());
    for file in files {
        let (stem, ext) = match file.name.rsplit_once('.') {
            Some((stem, ext)) if !stem.is_empty() => (d_chars(stem, 8), d_chars(ext, 3)),
            _ => (d_chars(file.name, 8), String::new()),
        };
        let numbered = (1..=MAX_FILES).map(|n| {
            let suffix = format!("_{n}");
            format!("{}{suffix}", &stem[..stem.len().min(8 - suffix.len())])
        });
        let name = std::iter::once(stem.clone())
            .chain(numbered)
            .map(|stem| (stem, ext.clone()))
            .find(|name| !used.contains(name))
            .ok_or(IsoError::TooManyFiles(files.len()))?;
        used.insert(name.clone());
        names.push(name);
    }
    Ok(names)
}

/// A directory record to write: identifier, System Use area, and the file it describes
/// (`None` for the directory itself, `.` and `..`).
struct Record {
    id: Vec<u8>,
    system_use: Vec<u8>,
    file: Option<usize>,
}

impl Record {
    fn new(id: Vec<u8>, system_use: Vec<u8>, file: Option<usize>) -> Self {
        Self {
            id,
            system_use,
            file,
        }
    }

    fn bytes(&self, extent: (u32, u32)) -> Vec<u8> {
        dir_record(&self.id, &self.system_use, extent, self.file.is_none())
    }
}

/// The primary root directory: `.`, `..` and the files sorted by level 1 name, with
/// Rock Ridge entries.
fn primary_records(files: &[IsoFile<'_>], level1: &[(String, String)]) -> Vec<Record> {
    let dir_px = px(DIR_MODE, 2);
    let dot = [sp(), rr(RR_PX), dir_px.clone(), ce(er().len())].concat();
    let mut records = vec![
        Record::new(vec![0], dot, None),
        Record::new(vec![1], [rr(RR_PX), dir_px].concat(), None),
    ];
    let mut order: Vec<usize> = (0..files.len()).collect();
    order.sort_by_key(|&i| &level1[i]);
    records.extend(order.into_iter().map(|i| {
        let (stem, ext) = &level1[i];
        let system_use = [rr(RR_PX | RR_NM), nm(files[i].name), px(FILE_MODE, 1)].concat();
        Record::new(format!("{stem}.{ext};1").into_bytes(), system_use, Some(i))
    }));
    records
}

/// The Joliet root directory: `.`, `..` and the files sorted by name (ASCII, so that is
/// UCS-2 order), with UCS-2 big-endian names.
fn joliet_records(files: &[IsoFile<'_>]) -> Vec<Record> {
    let mut records = vec![
        Record::new(vec![0], vec![], None),
        Record::new(vec![1], vec![], None),
    ];
    let mut order: Vec<usize> = (0..files.len()).collect();
    order.sort_by_key(|&i| files[i].name);
    records.extend(order.into_iter().map(|i| {
        let id = files[i].name.encode_utf16().flat_map(u16::to_be_bytes);
        Record::new(id.collect(), vec![], Some(i))
    }));
    records
}

/// A directory's records with their offsets in it, and its size (whole sectors).
struct Directory {
    records: Vec<Record>,
    offsets: Vec<usize>,
    size: u32,
}

impl Directory {
    fn new(records: Vec<Record>) -> Self {
        let mut offsets = Vec::with_capacity(records.len());
        let mut pos = 0;
        for record in &records {
            let len = record.bytes((0, 0)).len();
            if pos % SECTOR + len > SECTOR {
                pos = pos.next_multiple_of(SECTOR);
            }
            offsets.push(pos);
            pos += len;
        }
        // At most MAX_FILES + 2 records of at most 255 bytes each: no truncation.
        let size = pos.next_multiple_of(SECTOR) as u32;
        Self {
            records,
            offsets,
            size,
        }
    }

    fn sectors(&self) -> u32 {
        self.size / SECTOR as u32
    }

    /// Writes the directory at its own extent `root`; `extents` are the files' (lba, size).
    fn write(&self, image: &mut [u8], root: (u32, u32), extents: &[(u32, u32)]) {
        for (record, &offset) in self.records.iter().zip(&self.offsets) {
            let extent = record.file.map_or(root, |i| extents[i]);
            put(image, at(root.0) + offset, &record.bytes(extent));
        }
    }
}

/// Extents (lba, size) of files of the given sizes placed from sector `first_lba` on,
/// empty files at 0, and the image size in sectors.
fn allocate(lens: &[u64], first_lba: u32) -> Result<(Vec<(u32, u32)>, u32), IsoError> {
    let mut next = first_lba;
    let mut extents = Vec::with_capacity(lens.len());
    for &len in lens {
        let end = u64::from(next).saturating_add(len.div_ceil(SECTOR as u64));
        let bytes = end.saturating_mul(SECTOR as u64);
        if bytes > MAX_IMAGE_BYTES || usize::try_from(bytes).is_err() {
            return Err(IsoError::ImageTooLarge(bytes));
        }
        // Both below 2^32 now: len < bytes ≤ 4 GiB, and end ≤ 2^21.
        extents.push((if len == 0 { 0 } else { next }, len as u32));
        next = end as u32;
    }
    Ok((extents, next))
}

/// A directory record (ECMA-119 9.1); names are short enough to keep it ≤ 255 bytes.
fn dir_record(id: &[u8], system_use: &[u8], (lba, size): (u32, u32), directory: bool) -> Vec<u8> {
    let mut record = vec![0, 0]; // length (set below), extended attribute record length
    record.extend(both32(lba));
    record.extend(both32(size));
    record.extend(RECORD_DATE);
    record.extend([if directory { 2 } else { 0 }, 0, 0]); // flags, unit size, gap size
    record.extend(both16(1)); // volume sequence number
    record.push(id.len() as u8);
    record.extend(id);
    if id.len() % 2 == 0 {
        record.push(0);
    }
    record.extend(system_use);
    if record.len() % 2 == 1 {
        record.push(0);
    }
    record[0] = record.len() as u8;
    record
}

/// The primary or Joliet supplementary volume descriptor (ECMA-119 8.4).
fn volume_descriptor(joliet: bool, volume_id: &str, sectors: u32, root: (u32, u32)) -> Vec<u8> {
    let mut d = vec![0; SECTOR];
    let (kind, table) = match joliet {
        false => (1, PRIMARY_PATH_TABLE_LBA),
        true => (2, JOLIET_PATH_TABLE_LBA),
    };
    put(&mut d, 0, &[kind, b'C', b'D', b'0', b'0', b'1', 1]);
    put(&mut d, 8, &text(joliet, "LINUX", 32)); // system identifier
    put(&mut d, 40, &text(joliet, volume_id, 32));
    put(&mut d, 80, &both32(sectors));
    if joliet {
        put(&mut d, 88, b"%/E"); // escape sequence: UCS-2 level 3
    }
    put(&mut d, 120, &both16(1)); // volume set size
    put(&mut d, 124, &both16(1)); // volume sequence number
    put(&mut d, 128, &both16(SECTOR as u16));
    put(&mut d, 132, &both32(10)); // path table size: the root's record alone
    put(&mut d, 140, &table.to_le_bytes());
    put(&mut d, 148, &(table + 1).to_be_bytes());
    put(&mut d, 156, &dir_record(&[0], &[], root, true));
    // Volume set, publisher, preparer, application, copyright, abstract, bibliographic.
    for at in [190, 318, 446, 574] {
        put(&mut d, at, &text(joliet, "", 128));
    }
    for at in [702, 739, 776] {
        put(&mut d, at, &text(joliet, "", 37));
    }
    put(&mut d, 813, DESCRIPTOR_DATE); // creation
    put(&mut d, 830, DESCRIPTOR_DATE); // modification
    put(&mut d, 847, NO_DATE); // expiration
    put(&mut d, 864, NO_DATE); // effective
    d[881] = 1; // file structure version
    d
}

/// A text field: ASCII padded with spaces, or for Joliet UCS-2 big-endian padded with U+0020.
fn text(joliet: bool, s: &str, len: usize) -> Vec<u8> {
    if joliet {
        let units = s.encode_utf16().chain(std::iter::repeat(0x20));
        units.flat_map(u16::to_be_bytes).take(len).collect()
    } else {
        s.bytes().chain(std::iter::repeat(b' ')).take(len).collect()
    }
}

/// Writes the L path table at sector `lba` and the M one after it (ECMA-119 9.4): each
/// holds only the root directory's record (number 1, its own parent).
fn path_tables(image: &mut [u8], lba: u32, root_lba: u32) {
    let (le, be) = (root_lba.to_le_bytes(), root_lba.to_be_bytes());
    let l_table = [1, 0, le[0], le[1], le[2], le[3], 1, 0, 0, 0];
    let m_table = [1, 0, be[0], be[1], be[2], be[3], 0, 1, 0, 0];
    put(image, at(lba), &l_table);
    put(image, at(lba + 1), &m_table);
}

/// A SUSP entry: signature, length, version 1, body (bodies here are < 252 bytes).
fn susp(signature: &[u8; 2], body: &[u8]) -> Vec<u8> {
    [&signature[..], &[(4 + body.len()) as u8, 1], body].concat()
}

fn sp() -> Vec<u8> {
    susp(b"SP", &[0xBE, 0xEF, 0])
}

fn rr(flags: u8) -> Vec<u8> {
    susp(b"RR", &[flags])
}

fn px(mode: u32, links: u32) -> Vec<u8> {
    let body = [both32(mode), both32(links), both32(0), both32(0)]; // mode, links, uid, gid
    susp(b"PX", &body.concat())
}

fn nm(name: &str) -> Vec<u8> {
    susp(b"NM", &[&[0], name.as_bytes()].concat())
}

fn ce(len: usize) -> Vec<u8> {
    let body = [both32(CONTINUATION_LBA), both32(0), both32(len as u32)]; // at, offset, len
    susp(b"CE", &body.concat())
}

fn er() -> Vec<u8> {
    let [id, description, source] = [ER_ID, ER_DESCRIPTION, ER_SOURCE].map(str::as_bytes);
    let lens = [id.len(), description.len(), source.len()].map(|len| len as u8);
    susp(b"ER", &[&lens[..], &[1], id, description, source].concat()) // version 1
}

fn both16(v: u16) -> [u8; 4] {
    let (le, be) = (v.to_le_bytes(), v.to_be_bytes());
    [le[0], le[1], be[0], be[1]]
}

fn both32(v: u32) -> [u8; 8] {
    let (le, be) = (v.to_le_bytes(), v.to_be_bytes());
    [le[0], le[1], le[2], le[3], be[0], be[1], be[2], be[3]]
}

/// Byte offset of sector `lba`.
fn at(lba: u32) -> usize {
    lba as usize * SECTOR
}

/// Copies `bytes` into `buf` at `offset`; the layout keeps it in bounds, and an
/// out-of-bounds copy is skipped rather than panicking.
fn put(buf: &mut [u8], offset: usize, bytes: &[u8]) {
    if let Some(dst) = buf.get_mut(offset..offset + bytes.len()) {
        dst.copy_from_slice(bytes);
    }
}

#[cfg(test)]
mod tests;
