//! ISO 9660 images with Joliet and Rock Ridge, written in memory.
//!
//! Why our own: peers shell out to genisoimage/xorrisofs (tens of milliseconds, or 100 ms
//! quanta for xorrisofs) and the crates that write ISO 9660 either lack Rock Ridge or pull a
//! whole filesystem toolkit. A seed is a handful of small files, so the writer stays small:
//!
//! - sectors 0-15 empty; 16 the primary volume descriptor; 17 the Joliet supplementary
//!   descriptor (UCS-2 level 3); 18 the terminator;
//! - four path tables (L and M, for each hierarchy);
//! - the primary hierarchy's directories, whose records carry Rock Ridge entries (SP and ER
//!   on the root's ".", PX on every record, NM with the real name), then Joliet's;
//! - file data, each file starting on a sector, shared by both hierarchies.
//!
//! Invariants: a directory record never crosses a sector boundary; records in a directory
//! are sorted by identifier; every timestamp is the fixed `TIMESTAMP`, so the output depends
//! on the input alone.

use std::collections::BTreeMap;

const SECTOR: usize = 2048;
/// 2000-01-01 00:00:00 UTC, in every timestamp field.
const TIMESTAMP_DIR: [u8; 7] = [100, 1, 1, 0, 0, 0, 0];
const TIMESTAMP_VOL: &[u8; 16] = b"2000010100000000";

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IsoError {
    #[error("file name {0:?} is empty, is '.' or '..', or contains '/' or NUL")]
    BadName(String),
    #[error("file name {0:?} is longer than 64 characters (Joliet's limit)")]
    NameTooLong(String),
    #[error("path {0:?} is both a file and a directory")]
    Clash(String),
    #[error("volume label {0:?} must be 1-32 ASCII characters")]
    BadLabel(String),
    #[error("the image would exceed 4 GiB")]
    TooLarge,
}

enum Node {
    File(Vec<u8>),
    Dir(BTreeMap<String, Node>),
}

/// Builds an image labelled `label` holding `files` (`a/b/c` paths create directories).
pub fn build(label: &str, files: &[(&str, &[u8])]) -> Result<Vec<u8>, IsoError> {
    if label.is_empty() || label.len() > 32 || !label.is_ascii() || label.chars().any(|c| c.is_ascii_control()) {
        return Err(IsoError::BadLabel(label.to_owned()));
    }
    let mut root = BTreeMap::new();
    for (path, data) in files {
        insert(&mut root, path, data)?;
    }
    Writer::new(root).write(label)
}

fn insert(root: &mut BTreeMap<String, Node>, path: &str, data: &[u8]) -> Result<(), IsoError> {
    let parts: Vec<&str> = path.split('/').collect();
    let mut dir = root;
    for (i, part) in parts.iter().enumerate() {
        if part.is_empty() || *part == "." || *part == ".." || part.contains('\0') {
            return Err(IsoError::BadName(path.to_owned()));
        }
        if part.encode_utf16().count() > 64 {
            return Err(IsoError::NameTooLong(part.to_string()));
        }
        if i + 1 == parts.len() {
            if dir.contains_key(*part) {
                return Err(IsoError::Clash(path.to_owned()));
            }
            dir.insert(part.to_string(), Node::File(data.to_vec()));
            return Ok(());
        }
        let entry = dir.entry(part.to_string()).or_insert_with(|| Node::Dir(BTreeMap::new()));
        dir = match entry {
            Node::Dir(d) => d,
            Node::File(_) => return Err(IsoError::Clash(path.to_owned())),
        };
    }
    Ok(())
}

/// A directory, flattened: index in BFS order (the path-table order).
struct DirInfo {
    parent: usize,
    /// (real name, child dir index or file index)
    entries: Vec<(String, Entry)>,
    iso_name: Vec<u8>,
    joliet_name: Vec<u8>,
}

#[derive(Clone, Copy)]
enum Entry {
    Dir(usize),
    File(usize),
}

struct Writer {
    dirs: Vec<DirInfo>,
    files: Vec<Vec<u8>>,
}

fn both16(v: u16) -> [u8; 4] {
    let mut b = [0; 4];
    b[..2].copy_from_slice(&v.to_le_bytes());
    b[2..].copy_from_slice(&v.to_be_bytes());
    b
}

fn both32(v: u32) -> [u8; 8] {
    let mut b = [0; 8];
    b[..4].copy_from_slice(&v.to_le_bytes());
    b[4..].copy_from_slice(&v.to_be_bytes());
    b
}

fn sectors(len: usize) -> usize {
    len.div_ceil(SECTOR)
}

fn ucs2(s: &str) -> Vec<u8> {
    s.encode_utf16().flat_map(|u| u.to_be_bytes()).collect()
}

/// An ISO 9660 identifier for `name`: uppercase d-characters, at most 30 characters
/// (level 2), files with a ";1" version. Rock Ridge's NM entry carries the real name.
fn iso_identifier(name: &str, is_dir: bool, taken: &mut Vec<Vec<u8>>) -> Vec<u8> {
    let base: String = name.chars().map(|c| if c.is_ascii_alphanumeric() { c.to_ascii_uppercase() } else { '_' }).take(26).collect();
    let mut candidate = base.clone();
    let mut n = 1;
    loop {
        let mut id = candidate.clone().into_bytes();
        if !is_dir {
            id.extend_from_slice(b";1");
        }
        if !taken.contains(&id) {
            taken.push(id.clone());
            return id;
        }
        candidate = format!("{}~{n}", &base[..base.len().min(24)]);
        n += 1;
    }
}

fn joliet_identifier(name: &str, is_dir: bool) -> Vec<u8> {
    let mut id = ucs2(name);
    if !is_dir {
        id.extend(ucs2(";1"));
    }
    id
}

/// Rock Ridge entries for one record.
fn rock_ridge(mode: u32, nlink: u32, name: Option<&str>, root_dot: bool) -> Vec<u8> {
    let mut su = Vec::new();
    if root_dot {
        su.extend_from_slice(&[b'S', b'P', 7, 1, 0xBE, 0xEF, 0]);
    }
    su.extend_from_slice(&[b'P', b'X', 36, 1]);
    su.extend_from_slice(&both32(mode));
    su.extend_from_slice(&both32(nlink));
    su.extend_from_slice(&both32(0)); // uid
    su.extend_from_slice(&both32(0)); // gid
    if let Some(n) = name {
        su.extend_from_slice(&[b'N', b'M', (5 + n.len()) as u8, 1, 0]);
        su.extend_from_slice(n.as_bytes());
    }
    if root_dot {
        let (id, des, src) = (&b"RRIP_1991A"[..], &b"ROCK RIDGE INTERCHANGE PROTOCOL"[..], &b"KVMCTL"[..]);
        su.extend_from_slice(&[
            b'E',
            b'R',
            (8 + id.len() + des.len() + src.len()) as u8,
            1,
            id.len() as u8,
            des.len() as u8,
            src.len() as u8,
            1,
        ]);
        su.extend_from_slice(id);
        su.extend_from_slice(des);
        su.extend_from_slice(src);
    }
    su
}

fn dir_record(identifier: &[u8], extent: u32, size: u32, is_dir: bool, system_use: &[u8]) -> Vec<u8> {
    let mut r = vec![0u8; 33];
    r[2..10].copy_from_slice(&both32(extent));
    r[10..18].copy_from_slice(&both32(size));
    r[18..25].copy_from_slice(&TIMESTAMP_DIR);
    r[25] = if is_dir { 2 } else { 0 };
    r[28..32].copy_from_slice(&both16(1));
    r[32] = identifier.len() as u8;
    r.extend_from_slice(identifier);
    if identifier.len() % 2 == 0 {
        r.push(0);
    }
    r.extend_from_slice(system_use);
    if r.len() % 2 == 1 {
        r.push(0);
    }
    r[0] = r.len() as u8;
    r
}

/// Appends records to a directory's bytes without letting one cross a sector boundary.
fn push_record(buf: &mut Vec<u8>, rec: &[u8]) {
    let used = buf.len() % SECTOR;
    if used + rec.len() > SECTOR {
        buf.resize(buf.len() + (SECTOR - used), 0);
    }
    buf.extend_from_slice(rec);
}

const DIR_MODE: u32 = 0o040555;
const FILE_MODE: u32 = 0o100444;

impl Writer {
    fn new(root: BTreeMap<String, Node>) -> Self {
        let mut w = Writer { dirs: Vec::new(), files: Vec::new() };
        // BFS so that parents come before children, as path tables require.
        let mut queue: std::collections::VecDeque<(usize, String, BTreeMap<String, Node>)> = std::collections::VecDeque::new();
        queue.push_back((0, String::new(), root));
        while let Some((parent, _name, children)) = queue.pop_front() {
            let idx = w.dirs.len();
            w.dirs.push(DirInfo { parent, entries: Vec::new(), iso_name: Vec::new(), joliet_name: Vec::new() });
            let mut pending = Vec::new();
            for (child_name, node) in children {
                match node {
                    Node::File(data) => {
                        w.files.push(data);
                        w.dirs[idx].entries.push((child_name, Entry::File(w.files.len() - 1)));
                    }
                    Node::Dir(d) => pending.push((child_name, d)),
                }
            }
            let base = idx + 1 + queue.len();
            for (i, (child_name, d)) in pending.into_iter().enumerate() {
                w.dirs[idx].entries.push((child_name.clone(), Entry::Dir(base + i)));
                queue.push_back((idx, child_name, d));
            }
        }
        // A directory's own identifiers (for the path tables), as its parent assigns them.
        for p in 0..w.dirs.len() {
            let ids = w.file_identifiers(p);
            for ((_, e), (iso_id, joliet_id)) in w.dirs[p].entries.clone().into_iter().zip(ids) {
                if let Entry::Dir(d) = e {
                    w.dirs[d].iso_name = iso_id;
                    w.dirs[d].joliet_name = joliet_id;
                }
            }
        }
        w
    }

    fn file_identifiers(&self, dir: usize) -> Vec<(Vec<u8>, Vec<u8>)> {
        // ISO identifiers are made unique within a directory, in entry order.
        let mut taken = Vec::new();
        self.dirs[dir]
            .entries
            .iter()
            .map(|(name, e)| {
                let is_dir = matches!(e, Entry::Dir(_));
                (iso_identifier(name, is_dir, &mut taken), joliet_identifier(name, is_dir))
            })
            .collect()
    }

    /// Directory contents for one hierarchy, given every directory's and file's extent.
    fn directory_bytes(&self, d: usize, joliet: bool, dir_extent: &[u32], dir_size: &[u32], file_extent: &[u32]) -> Vec<u8> {
        let mut buf = Vec::new();
        let parent = self.dirs[d].parent;
        let su_dot = if joliet { Vec::new() } else { rock_ridge(DIR_MODE, 2, None, d == 0) };
        let su_dotdot = if joliet { Vec::new() } else { rock_ridge(DIR_MODE, 2, None, false) };
        push_record(&mut buf, &dir_record(&[0], dir_extent[d], dir_size[d], true, &su_dot));
        push_record(&mut buf, &dir_record(&[1], dir_extent[parent], dir_size[parent], true, &su_dotdot));
        let ids = self.file_identifiers(d);
        let mut records: Vec<(Vec<u8>, Vec<u8>)> = Vec::new();
        for ((name, e), (iso_id, joliet_id)) in self.dirs[d].entries.iter().zip(ids) {
            let id = if joliet { joliet_id } else { iso_id };
            let rec = match *e {
                Entry::Dir(c) => {
                    let su = if joliet { Vec::new() } else { rock_ridge(DIR_MODE, 2, Some(name), false) };
                    dir_record(&id, dir_extent[c], dir_size[c], true, &su)
                }
                Entry::File(f) => {
                    let su = if joliet { Vec::new() } else { rock_ridge(FILE_MODE, 1, Some(name), false) };
                    dir_record(&id, file_extent[f], self.files[f].len() as u32, false, &su)
                }
            };
            records.push((id, rec));
        }
        records.sort_by(|a, b| a.0.cmp(&b.0));
        for (_, rec) in records {
            push_record(&mut buf, &rec);
        }
        buf
    }

    fn path_table(&self, joliet: bool, big_endian: bool, dir_extent: &[u32]) -> Vec<u8> {
        let mut t = Vec::new();
        for (i, d) in self.dirs.iter().enumerate() {
            let id: &[u8] = if i == 0 {
                &[0]
            } else if joliet {
                &d.joliet_name
            } else {
                &d.iso_name
            };
            t.push(id.len() as u8);
            t.push(0);
            let (ext, parent) = (dir_extent[i], (d.parent + 1) as u16);
            if big_endian {
                t.extend_from_slice(&ext.to_be_bytes());
                t.extend_from_slice(&parent.to_be_bytes());
            } else {
                t.extend_from_slice(&ext.to_le_bytes());
                t.extend_from_slice(&parent.to_le_bytes());
            }
            t.extend_from_slice(id);
            if id.len() % 2 == 1 {
                t.push(0);
            }
        }
        t
    }

    fn write(&self, label: &str) -> Result<Vec<u8>, IsoError> {
        let n = self.dirs.len();
        // Directory sizes do not depend on extents, so compute them with placeholder extents.
        let zeros = vec![0u32; n];
        let fzeros = vec![0u32; self.files.len()];
        let iso_sizes: Vec<u32> =
            (0..n).map(|d| (sectors(self.directory_bytes(d, false, &zeros, &zeros, &fzeros).len()) * SECTOR) as u32).collect();
        let jol_sizes: Vec<u32> =
            (0..n).map(|d| (sectors(self.directory_bytes(d, true, &zeros, &zeros, &fzeros).len()) * SECTOR) as u32).collect();
        let pt_iso_len = self.path_table(false, false, &zeros).len();
        let pt_jol_len = self.path_table(true, false, &zeros).len();

        let mut next = 19usize; // after the descriptors
        let mut alloc = |len: usize| {
            let at = next;
            next += sectors(len).max(1);
            at
        };
        let pt = [alloc(pt_iso_len), alloc(pt_iso_len), alloc(pt_jol_len), alloc(pt_jol_len)];
        let iso_ext: Vec<u32> = iso_sizes.iter().map(|s| alloc(*s as usize) as u32).collect();
        let jol_ext: Vec<u32> = jol_sizes.iter().map(|s| alloc(*s as usize) as u32).collect();
        let file_ext: Vec<u32> = self.files.iter().map(|f| if f.is_empty() { 0 } else { alloc(f.len()) as u32 }).collect();
        let total = next;
        if total as u64 * SECTOR as u64 > u32::MAX as u64 {
            return Err(IsoError::TooLarge);
        }

        let mut img = vec![0u8; total * SECTOR];
        let put =
            |img: &mut Vec<u8>, sector: usize, bytes: &[u8]| img[sector * SECTOR..sector * SECTOR + bytes.len()].copy_from_slice(bytes);

        for (joliet, ext, sizes, pt_l, pt_m, pt_len, sector) in
            [(false, &iso_ext, &iso_sizes, pt[0], pt[1], pt_iso_len, 16), (true, &jol_ext, &jol_sizes, pt[2], pt[3], pt_jol_len, 17)]
        {
            let root = dir_record(&[0], ext[0], sizes[0], true, &[]);
            put(&mut img, sector, &self.volume_descriptor(label, joliet, total as u32, pt_len as u32, pt_l as u32, pt_m as u32, &root));
            put(&mut img, pt_l, &self.path_table(joliet, false, ext));
            put(&mut img, pt_m, &self.path_table(joliet, true, ext));
            for d in 0..n {
                put(&mut img, ext[d] as usize, &self.directory_bytes(d, joliet, ext, sizes, &file_ext));
            }
        }
        put(&mut img, 18, &[255, b'C', b'D', b'0', b'0', b'1', 1]);
        for (f, data) in self.files.iter().enumerate() {
            if !data.is_empty() {
                put(&mut img, file_ext[f] as usize, data);
            }
        }
        Ok(img)
    }

    #[allow(clippy::too_many_arguments)]
    fn volume_descriptor(&self, label: &str, joliet: bool, total: u32, pt_len: u32, pt_l: u32, pt_m: u32, root: &[u8]) -> Vec<u8> {
        let mut v = vec![0u8; SECTOR];
        v[0] = if joliet { 2 } else { 1 };
        v[1..6].copy_from_slice(b"CD001");
        v[6] = 1;
        let text = |v: &mut Vec<u8>, at: usize, len: usize, s: &str| {
            if joliet {
                let mut b = ucs2(s);
                b.truncate(len & !1);
                while b.len() < len - 1 {
                    b.extend_from_slice(&[0, b' ']);
                }
                b.resize(len, 0);
                v[at..at + len].copy_from_slice(&b);
            } else {
                let mut b = s.as_bytes().to_vec();
                b.truncate(len);
                b.resize(len, b' ');
                v[at..at + len].copy_from_slice(&b);
            }
        };
        text(&mut v, 8, 32, "LINUX");
        text(&mut v, 40, 32, label);
        v[80..88].copy_from_slice(&both32(total));
        if joliet {
            v[88..91].copy_from_slice(b"%/E"); // UCS-2 level 3
        }
        v[120..124].copy_from_slice(&both16(1));
        v[124..128].copy_from_slice(&both16(1));
        v[128..132].copy_from_slice(&both16(SECTOR as u16));
        v[132..140].copy_from_slice(&both32(pt_len));
        v[140..144].copy_from_slice(&pt_l.to_le_bytes());
        v[148..152].copy_from_slice(&pt_m.to_be_bytes());
        v[156..156 + root.len()].copy_from_slice(root);
        for (at, len) in [(190, 128), (318, 128), (446, 128), (702, 37), (739, 37), (776, 37)] {
            text(&mut v, at, len, "");
        }
        text(&mut v, 574, 128, "KVMCTL");
        for at in [813, 830, 864] {
            v[at..at + 16].copy_from_slice(TIMESTAMP_VOL);
        }
        v[847..863].copy_from_slice(b"0000000000000000");
        v[881] = 1;
        v
    }
}
