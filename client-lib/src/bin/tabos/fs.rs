//! `tabos fs` subcommands: the filesystem from the shell.
//!
//! Paths are UTF-8 (tabos names are); an argument that is not is refused with a
//! message. Relative paths resolve against the user's current directory (`tabos fs
//! cd`). Every failure prints `tabos: fs <command> <path>: <why>` and exits 1.

use clap::Subcommand;
use std::ffi::OsString;
use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use tabos_client::{Client, Error};
use tabos_procs::fs::wire::Stat;
use tabos_procs::fs::EntryKind;

/// `tabos fs` subcommands.
#[derive(Subcommand, Debug)]
pub enum FsCommand {
    /// Add user USER with home directory /USER (root only; as root, act as the user
    /// with `tabos --as USER fs ...`).
    Useradd { user: String },
    /// Make the directory PATH (mode 755).
    Mkdir { path: OsString },
    /// Copy the local file LOCAL into PATH, replacing a file already there.
    Put {
        local: PathBuf,
        path: OsString,
        /// Spread the file's blocks over every partition (default: keep them on the
        /// owner's home partition).
        #[arg(long)]
        parallel: bool,
    },
    /// Copy PATH into the local file LOCAL.
    Get { path: OsString, local: PathBuf },
    /// Write the contents of PATH to standard output.
    Cat { path: OsString },
    /// List the directory PATH (default: the current directory): type and mode,
    /// owner, size in bytes, name.
    Ls { path: Option<OsString> },
    /// Show the type, size, blocks, owner and mode of PATH.
    Stat { path: OsString },
    /// Remove the file or empty directory PATH.
    Rm { path: OsString },
    /// Move FROM to TO (within one user's tree; TO must not exist).
    Mv { from: OsString, to: OsString },
    /// Total size and number of the files under PATH of at least --min-size bytes.
    Du {
        path: OsString,
        /// Count only files of at least this many bytes.
        #[arg(long, default_value_t = 0)]
        min_size: u64,
    },
    /// Make PATH (a directory) the current directory of the user.
    Cd { path: OsString },
    /// Print the current directory of the user.
    Pwd,
}

/// Why a command failed, for its one-line message.
enum Failure {
    Call(Error),
    Usage(String),
}

impl From<Error> for Failure {
    fn from(e: Error) -> Self {
        Failure::Call(e)
    }
}

fn utf8(arg: &OsString) -> Result<&str, Failure> {
    arg.to_str()
        .ok_or_else(|| Failure::Usage(format!("{arg:?} is not UTF-8: tabos file names are UTF-8")))
}

fn mode_string(stat: &Stat) -> String {
    let kind = match stat.kind {
        EntryKind::Dir => 'd',
        EntryKind::LocalFile => '-',
        EntryKind::ParallelFile => 'p',
    };
    let mut out = String::from(kind);
    for shift in [6, 3, 0] {
        let bits = stat.mode >> shift;
        out.push(if bits & 4 != 0 { 'r' } else { '-' });
        out.push(if bits & 2 != 0 { 'w' } else { '-' });
        out.push(if bits & 1 != 0 { 'x' } else { '-' });
    }
    out
}

fn kind_name(kind: EntryKind) -> &'static str {
    match kind {
        EntryKind::Dir => "directory",
        EntryKind::LocalFile => "localized file",
        EntryKind::ParallelFile => "parallel file",
    }
}

/// Run one `tabos fs` subcommand.
pub fn run(client: &mut Client, command: FsCommand) -> Result<ExitCode, Error> {
    let (what, subject) = describe(&command);
    match execute(client, command) {
        Ok(()) => Ok(ExitCode::SUCCESS),
        Err(failure) => {
            let why = match failure {
                Failure::Call(e @ Error::Transport(_)) => return Err(e),
                Failure::Call(e) => e.to_string(),
                Failure::Usage(why) => why,
            };
            eprintln!("tabos: fs {what} {subject}: {why}");
            Ok(ExitCode::from(1))
        }
    }
}

/// The command's name and what it acts on, for messages.
fn describe(command: &FsCommand) -> (&'static str, String) {
    let show = |p: &OsString| p.to_string_lossy().into_owned();
    match command {
        FsCommand::Useradd { user } => ("useradd", user.clone()),
        FsCommand::Mkdir { path } => ("mkdir", show(path)),
        FsCommand::Put { local, path, .. } => {
            ("put", format!("{} {}", local.display(), show(path)))
        }
        FsCommand::Get { path, local } => ("get", format!("{} {}", show(path), local.display())),
        FsCommand::Cat { path } => ("cat", show(path)),
        FsCommand::Ls { path } => ("ls", path.as_ref().map_or(".".into(), show)),
        FsCommand::Stat { path } => ("stat", show(path)),
        FsCommand::Rm { path } => ("rm", show(path)),
        FsCommand::Mv { from, to } => ("mv", format!("{} {}", show(from), show(to))),
        FsCommand::Du { path, .. } => ("du", show(path)),
        FsCommand::Cd { path } => ("cd", show(path)),
        FsCommand::Pwd => ("pwd", String::new()),
    }
}

fn execute(client: &mut Client, command: FsCommand) -> Result<(), Failure> {
    let mut fs = client.fs();
    match command {
        FsCommand::Useradd { user } => {
            fs.useradd(&user)?;
            println!("added user {user} with home directory /{user}");
        }
        FsCommand::Mkdir { path } => fs.mkdir(utf8(&path)?)?,
        FsCommand::Put {
            local,
            path,
            parallel,
        } => {
            let path = utf8(&path)?;
            let data = std::fs::read(&local)
                .map_err(|e| Failure::Usage(format!("cannot read {}: {e}", local.display())))?;
            match fs.metadata(path) {
                Ok(stat) if stat.kind == EntryKind::Dir => {
                    return Err(Error::Status(tabos_client::Status::IsADirectory).into())
                }
                Ok(_) => fs.unlink(path)?,
                Err(Error::Status(tabos_client::Status::NotFound)) => {}
                Err(e) => return Err(e.into()),
            }
            let file = fs.create(path, parallel)?;
            fs.write_at(path, 0, &data)?;
            println!(
                "{} -> {} ({} bytes, {})",
                local.display(),
                file.path,
                data.len(),
                kind_name(file.stat.kind)
            );
        }
        FsCommand::Get { path, local } => {
            let data = fs.read_to_end(utf8(&path)?)?;
            std::fs::write(&local, &data)
                .map_err(|e| Failure::Usage(format!("cannot write {}: {e}", local.display())))?;
        }
        FsCommand::Cat { path } => {
            let data = fs.read_to_end(utf8(&path)?)?;
            let mut out = std::io::stdout().lock();
            out.write_all(&data)
                .and_then(|()| out.flush())
                .map_err(|e| Failure::Usage(format!("cannot write to standard output: {e}")))?;
        }
        FsCommand::Ls { path } => {
            let path = match &path {
                Some(p) => utf8(p)?,
                None => ".",
            };
            for entry in fs.read_dir(path)? {
                let stat = &entry.stat;
                println!(
                    "{} {:<12} {:>12} {}",
                    mode_string(stat),
                    stat.owner,
                    stat.size_bytes,
                    entry.name
                );
            }
        }
        FsCommand::Stat { path } => {
            let resolved = fs.resolve(utf8(&path)?)?;
            let stat = fs.metadata(resolved.as_str())?;
            println!("path:   {resolved}");
            println!("type:   {}", kind_name(stat.kind));
            println!("size:   {} bytes", stat.size_bytes);
            if stat.kind != EntryKind::Dir {
                println!("blocks: {} of {} bytes", stat.block_count, stat.block_bytes);
            }
            println!("owner:  {}", stat.owner);
            println!("mode:   {:o} ({})", stat.mode, mode_string(&stat));
        }
        FsCommand::Rm { path } => fs.unlink(utf8(&path)?)?,
        FsCommand::Mv { from, to } => fs.rename(utf8(&from)?, utf8(&to)?)?,
        FsCommand::Du { path, min_size } => {
            let resolved = fs.resolve(utf8(&path)?)?;
            let du = fs.du(resolved.as_str(), min_size)?;
            println!(
                "{} bytes in {} files of at least {min_size} bytes under {resolved}",
                du.total_bytes, du.file_count
            );
        }
        FsCommand::Cd { path } => {
            fs.set_current_dir(utf8(&path)?)?;
            println!("{}", fs.current_dir()?);
        }
        FsCommand::Pwd => println!("{}", fs.current_dir()?),
    }
    Ok(())
}
