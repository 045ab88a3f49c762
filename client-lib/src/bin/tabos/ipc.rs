//! `tabos ipc` subcommands: send, receive and multicast messages between mailboxes
//! (u64 receiver ids).

use clap::Subcommand;
use std::io::{Read, Write};
use std::process::ExitCode;
use std::time::Duration;
use tabos_client::{Client, Error, Status};

/// `tabos ipc` subcommands.
#[derive(Subcommand, Debug)]
pub enum IpcCommand {
    /// Send a message to mailbox --to; prints its message id.
    Send {
        /// Sender id recorded with the message.
        #[arg(long)]
        from: u64,
        /// Receiver mailbox id.
        #[arg(long)]
        to: u64,
        /// The message; absent or `-`: read it from stdin.
        text: Option<String>,
    },
    /// Take messages queued for a mailbox, oldest first, printing each as
    /// `from SENDER id ID: TEXT` (non-UTF-8 bytes shown as U+FFFD). Exits 1 when there
    /// is none.
    Recv {
        /// Receiver mailbox id (not the top-level `tabos --as USER`).
        #[arg(long = "as", value_name = "RECEIVER")]
        receiver: u64,
        /// Milliseconds to wait for a message when none is queued; 0: do not wait.
        #[arg(long, default_value_t = 0)]
        timeout_ms: u32,
        /// Most messages to take at once.
        #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..))]
        max: u32,
    },
    /// Send one message to several mailboxes (one call per partition); prints
    /// `to RECEIVER id ID` for each.
    Multicast {
        /// Sender id recorded with the message.
        #[arg(long)]
        from: u64,
        /// Receiver mailbox ids, comma-separated: `--to 2,3,4`.
        #[arg(long, value_delimiter = ',', required = true)]
        to: Vec<u64>,
        /// The message; absent or `-`: read it from stdin.
        text: Option<String>,
    },
}

/// The message text: the argument, or all of stdin.
fn message_bytes(text: Option<String>) -> Result<Vec<u8>, String> {
    match text {
        Some(text) if text != "-" => Ok(text.into_bytes()),
        _ => {
            let mut data = Vec::new();
            std::io::stdin()
                .read_to_end(&mut data)
                .map_err(|e| format!("cannot read the message from stdin: {e}"))?;
            Ok(data)
        }
    }
}

/// Run one `tabos ipc` subcommand.
pub fn run(client: &mut Client, command: IpcCommand) -> Result<ExitCode, Error> {
    match command {
        IpcCommand::Send { from, to, text } => {
            let data = match message_bytes(text) {
                Ok(data) => data,
                Err(why) => return Ok(fail(&why)),
            };
            println!("{}", client.send(from, to, &data)?);
        }
        IpcCommand::Multicast { from, to, text } => {
            let data = match message_bytes(text) {
                Ok(data) => data,
                Err(why) => return Ok(fail(&why)),
            };
            for (receiver, message_id) in client.multicast(from, &to, &data)? {
                println!("to {receiver} id {message_id}");
            }
        }
        IpcCommand::Recv {
            receiver,
            timeout_ms,
            max,
        } => {
            let timeout = Duration::from_millis(timeout_ms.into());
            let received = if max == 1 {
                client.recv(receiver, timeout).map(|m| vec![m])
            } else {
                client.recv_batch(receiver, max as usize, timeout)
            };
            let messages = match received {
                Ok(messages) => messages,
                Err(Error::Status(Status::QueueEmpty)) => {
                    return Ok(fail(&format!("no message for {receiver}")));
                }
                Err(Error::Status(Status::Timeout)) => {
                    return Ok(fail(&format!(
                        "no message for {receiver} within {timeout_ms} ms"
                    )));
                }
                Err(e) => return Err(e),
            };
            let mut out = std::io::stdout().lock();
            for m in messages {
                let text = String::from_utf8_lossy(&m.data);
                let text = text.strip_suffix('\n').unwrap_or(&text);
                // A closed stdout (`| head`) must not lose the exit status of a receive
                // that already took the messages: ignore write errors.
                let _ = writeln!(out, "from {} id {}: {text}", m.sender_id, m.message_id);
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn fail(why: &str) -> ExitCode {
    eprintln!("tabos: {why}");
    ExitCode::from(1)
}
