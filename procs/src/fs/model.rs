//! A plain model of the filesystem for tests: a map from path to file bytes and a map
//! of directories, with the documented rules (statuses and their order) written out
//! directly, without tables, partitions or blocks.

use std::collections::{BTreeMap, BTreeSet};

use crate::fs::path::FsPath;
use tabos_engine::UserName;
use tabos_transport::Status;

const R: u32 = 4;
const W: u32 = 2;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MDir {
    pub owner: String,
    pub mode: u32,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MFile {
    pub owner: String,
    pub mode: u32,
    pub parallel: bool,
    pub data: Vec<u8>,
}

/// What a path names in the model.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MNode {
    Dir(MDir),
    File(MFile),
}

impl MNode {
    fn owner_mode(&self) -> (&str, u32) {
        match self {
            MNode::Dir(d) => (&d.owner, d.mode),
            MNode::File(f) => (&f.owner, f.mode),
        }
    }
}

fn may(who: &str, node: &MNode, bit: u32) -> bool {
    let (owner, mode) = node.owner_mode();
    who == "root" || (if who == owner { mode >> 6 } else { mode }) & bit != 0
}

fn need(who: &str, node: &MNode, bit: u32) -> Result<(), Status> {
    if may(who, node, bit) {
        Ok(())
    } else {
        Err(Status::PermissionDenied)
    }
}

#[derive(Clone, Debug, Default)]
pub struct Model {
    pub files: BTreeMap<String, MFile>,
    pub dirs: BTreeMap<String, MDir>,
    pub users: BTreeMap<String, String>,
    pub file_bytes_max: u64,
    pub block_bytes_local: u64,
    pub block_bytes_parallel: u64,
}

impl Model {
    pub fn new(file_bytes_max: u64, block_bytes_local: u64, block_bytes_parallel: u64) -> Model {
        Model {
            file_bytes_max,
            block_bytes_local,
            block_bytes_parallel,
            ..Model::default()
        }
    }

    pub fn block_bytes(&self, file: &MFile) -> u64 {
        if file.parallel {
            self.block_bytes_parallel
        } else {
            self.block_bytes_local
        }
    }

    fn get(&self, path: &str) -> Option<MNode> {
        if path == "/" {
            return Some(MNode::Dir(MDir {
                owner: "root".into(),
                mode: 0o755,
            }));
        }
        if let Some(d) = self.dirs.get(path) {
            return Some(MNode::Dir(d.clone()));
        }
        self.files.get(path).map(|f| MNode::File(f.clone()))
    }

    fn parse_and_user(&self, path: &str) -> Result<FsPath, Status> {
        let p = FsPath::parse(path)?;
        match p.user() {
            Some(u) if !self.users.contains_key(u) => Err(Status::NotFound),
            _ => Ok(p),
        }
    }

    pub fn lookup(&self, p: &FsPath) -> Result<MNode, Status> {
        if let Some(node) = self.get(p.as_str()) {
            return Ok(node);
        }
        let mut at = p.parent();
        while let Some(dir) = at {
            match self.get(dir.as_str()) {
                Some(MNode::Dir(_)) => return Err(Status::NotFound),
                Some(MNode::File(_)) => return Err(Status::NotADirectory),
                None => at = dir.parent(),
            }
        }
        Err(Status::NotFound)
    }

    fn lookup_dir(&self, p: &FsPath) -> Result<MNode, Status> {
        match self.lookup(p)? {
            MNode::File(_) => Err(Status::NotADirectory),
            dir => Ok(dir),
        }
    }

    fn lookup_file(&self, p: &FsPath) -> Result<MFile, Status> {
        match self.lookup(p)? {
            MNode::File(f) => Ok(f),
            MNode::Dir(_) => Err(Status::IsADirectory),
        }
    }

    pub fn useradd(&mut self, who: &str, name: &str) -> Result<(), Status> {
        if who != "root" {
            return Err(Status::PermissionDenied);
        }
        if UserName::new(name).is_none() {
            return Err(Status::InvalidPath);
        }
        if self.users.contains_key(name) {
            return Err(Status::AlreadyExists);
        }
        self.users.insert(name.into(), format!("/{name}"));
        let home = MDir {
            owner: name.into(),
            mode: 0o755,
        };
        self.dirs.insert(format!("/{name}"), home);
        Ok(())
    }

    /// `mkdir` (`file` is `None`) or `create` (`Some(parallel)`).
    pub fn create(
        &mut self,
        who: &str,
        path: &str,
        mode: u32,
        file: Option<bool>,
    ) -> Result<(), Status> {
        let p = self.parse_and_user(path)?;
        if p.depth() < 2 {
            return Err(Status::PermissionDenied);
        }
        let parent = self.lookup_dir(&p.parent().unwrap())?;
        need(who, &parent, W)?;
        if self.lookup(&p).is_ok() {
            return Err(Status::AlreadyExists);
        }
        let owner = who.to_string();
        match file {
            None => {
                self.dirs.insert(p.to_string(), MDir { owner, mode });
            }
            Some(parallel) => {
                let f = MFile {
                    owner,
                    mode,
                    parallel,
                    data: Vec::new(),
                };
                self.files.insert(p.to_string(), f);
            }
        }
        Ok(())
    }

    fn has_children(&self, dir: &str) -> bool {
        let child = |k: &String| FsPath::parse(k).unwrap().parent_str() == Some(dir);
        self.dirs.keys().any(child) || self.files.keys().any(child)
    }

    pub fn delete(&mut self, who: &str, path: &str) -> Result<(), Status> {
        let p = self.parse_and_user(path)?;
        if p.depth() < 2 {
            return Err(Status::PermissionDenied);
        }
        let node = self.lookup(&p)?;
        need(who, &self.lookup(&p.parent().unwrap())?, W)?;
        match node {
            MNode::Dir(_) if self.has_children(p.as_str()) => return Err(Status::NotEmpty),
            MNode::File(ref f) if f.parallel => need(who, &node, W)?,
            _ => {}
        }
        self.dirs.remove(p.as_str());
        self.files.remove(p.as_str());
        Ok(())
    }

    pub fn stat(&self, path: &str) -> Result<MNode, Status> {
        let p = self.parse_and_user(path)?;
        self.lookup(&p)
    }

    /// Names and nodes of a directory's entries, by name.
    pub fn list(&self, who: &str, path: &str) -> Result<Vec<(String, MNode)>, Status> {
        let p = self.parse_and_user(path)?;
        let dir = self.lookup_dir(&p)?;
        need(who, &dir, R)?;
        let mut out = Vec::new();
        for key in self.dirs.keys().chain(self.files.keys()) {
            let k = FsPath::parse(key).unwrap();
            if k.parent_str() == Some(p.as_str()) {
                out.push((k.name().unwrap().to_string(), self.get(key).unwrap()));
            }
        }
        out.sort_by(|a, b| a.0.cmp(&b.0));
        Ok(out)
    }

    pub fn rename(&mut self, who: &str, from: &str, to: &str) -> Result<(), Status> {
        let f = FsPath::parse(from)?;
        let t = FsPath::parse(to)?;
        if f.depth() < 2 || t.depth() < 2 {
            return Err(Status::PermissionDenied);
        }
        if f.user() != t.user() {
            return Err(Status::CrossNamespace);
        }
        let f = self.parse_and_user(from)?;
        self.lookup(&f)?;
        let to_parent = self.lookup_dir(&t.parent().unwrap())?;
        need(who, &self.lookup(&f.parent().unwrap())?, W)?;
        need(who, &to_parent, W)?;
        if f == t {
            return Ok(());
        }
        if t.is_within(&f) {
            return Err(Status::InvalidPath);
        }
        if self.lookup(&t).is_ok() {
            return Err(Status::AlreadyExists);
        }
        let moved = |k: &str| {
            let kp = FsPath::parse(k).unwrap();
            kp.is_within(&f)
                .then(|| format!("{}{}", t, &k[f.as_str().len()..]))
        };
        self.dirs = std::mem::take(&mut self.dirs)
            .into_iter()
            .map(|(k, v)| (moved(&k).unwrap_or(k), v))
            .collect();
        self.files = std::mem::take(&mut self.files)
            .into_iter()
            .map(|(k, v)| (moved(&k).unwrap_or(k), v))
            .collect();
        Ok(())
    }

    /// Total size and count of files of at least `min` bytes under `path`.
    pub fn du(&self, who: &str, path: &str, min: u64) -> Result<(u64, u64), Status> {
        let p = self.parse_and_user(path)?;
        let sizes: Vec<u64> = match self.lookup(&p)? {
            MNode::File(f) => vec![f.data.len() as u64],
            dir => {
                need(who, &dir, R)?;
                self.files
                    .iter()
                    .filter(|(k, _)| {
                        FsPath::parse(k).unwrap().is_within(&p) && k.as_str() != p.as_str()
                    })
                    .map(|(_, f)| f.data.len() as u64)
                    .collect()
            }
        };
        let big: Vec<u64> = sizes.into_iter().filter(|s| *s >= min).collect();
        Ok((big.iter().sum(), big.len() as u64))
    }

    pub fn read(&self, who: &str, path: &str, offset: u64, len: u64) -> Result<Vec<u8>, Status> {
        let p = self.parse_and_user(path)?;
        let f = self.lookup_file(&p)?;
        need(who, &MNode::File(f.clone()), R)?;
        let size = f.data.len() as u64;
        let start = offset.min(size);
        let end = offset.saturating_add(len).min(size);
        Ok(f.data[start as usize..end.max(start) as usize].to_vec())
    }

    /// The file at `path` if `who` may write it, with its block size.
    fn writable(&self, who: &str, path: &str) -> Result<(FsPath, MFile), Status> {
        let p = self.parse_and_user(path)?;
        let f = self.lookup_file(&p)?;
        need(who, &MNode::File(f.clone()), W)?;
        Ok((p, f))
    }

    fn put(&mut self, path: &FsPath, offset: u64, data: &[u8]) {
        let f = self.files.get_mut(path.as_str()).unwrap();
        let end = offset as usize + data.len();
        if f.data.len() < end {
            f.data.resize(end, 0);
        }
        f.data[offset as usize..end].copy_from_slice(data);
    }

    pub fn write(&mut self, who: &str, path: &str, offset: u64, data: &[u8]) -> Result<(), Status> {
        let (p, _) = self.writable(who, path)?;
        if offset + data.len() as u64 > self.file_bytes_max {
            return Err(Status::FileTooLarge);
        }
        self.put(&p, offset, data);
        Ok(())
    }

    pub fn read_block(&self, who: &str, path: &str, block_no: u64) -> Result<Vec<u8>, Status> {
        let p = self.parse_and_user(path)?;
        let f = self.lookup_file(&p)?;
        let block_bytes = self.block_bytes(&f);
        self.read(who, path, block_no * block_bytes, block_bytes)
    }

    pub fn write_blocks(
        &mut self,
        who: &str,
        path: &str,
        blocks: &[(u64, Vec<u8>)],
    ) -> Result<(), Status> {
        let (p, f) = self.writable(who, path)?;
        let block_bytes = self.block_bytes(&f);
        let mut end = 0;
        for (b, data) in blocks {
            if data.len() as u64 > block_bytes {
                return Err(Status::BadArgs);
            }
            end = end.max(b * block_bytes + data.len() as u64);
        }
        if end > self.file_bytes_max {
            return Err(Status::FileTooLarge);
        }
        for (b, data) in blocks {
            self.put(&p, b * block_bytes, data);
        }
        Ok(())
    }

    /// One block in each file, all or nothing.
    pub fn write_block_each(
        &mut self,
        who: &str,
        blocks: &[(String, u64, Vec<u8>)],
    ) -> Result<(), Status> {
        let saved = self.files.clone();
        for (path, b, data) in blocks {
            if let Err(e) = self.write_blocks(who, path, &[(*b, data.clone())]) {
                self.files = saved;
                return Err(e);
            }
        }
        Ok(())
    }

    pub fn cd(&mut self, who: &str, user: &str, path: &str) -> Result<(), Status> {
        let p = self.parse_and_user(path)?;
        self.lookup_dir(&p)?;
        if !self.users.contains_key(user) {
            return Err(Status::NotFound);
        }
        if who != "root" && who != user {
            return Err(Status::PermissionDenied);
        }
        self.users.insert(user.into(), p.to_string());
        Ok(())
    }

    /// Every path the model holds, directories and files.
    pub fn paths(&self) -> BTreeSet<String> {
        self.dirs.keys().chain(self.files.keys()).cloned().collect()
    }
}
