//! Processes of the sandbox: starting detached servers, telling whether the
//! pid in a pid file is still one of our servers, sending signals, and the
//! watchdog that outlives a test process.
//!
//! There is no `unsafe` here: signals go through the shell's `kill` builtin
//! and liveness is read from `/proc` (falling back to `kill -0` where there
//! is no `/proc`). The sandbox runs a handful of processes, so the cost of a
//! fork per signal does not matter, and the crate can keep
//! `#![forbid(unsafe_code)]`.

use std::fs;
use std::io;
use std::os::unix::fs::MetadataExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::thread;

/// A process we spawned, reaped by a background thread.
///
/// Reaping matters: a killed child that nobody waits for stays a zombie, and
/// a zombie still answers `kill -0`, so `down` would wait for it forever.
pub(super) struct Spawned {
    /// The process id (also what the server writes to its pid file).
    pub pid: u32,
    /// Set by the reaper thread when the process exits.
    exit: Arc<Mutex<Option<ExitStatus>>>,
}

impl Spawned {
    /// The exit status, once the process has exited.
    pub fn exit_status(&self) -> Option<ExitStatus> {
        self.exit.lock().ok().and_then(|g| *g)
    }
}

/// Spawns `cmd` in a process group of its own (so a Ctrl-C aimed at the
/// terminal's foreground group, or the exit of the caller, does not reach
/// it) and reaps it from a background thread.
pub(super) fn spawn_detached(cmd: &mut Command) -> io::Result<Spawned> {
    cmd.process_group(0);
    let mut child = cmd.spawn()?;
    let pid = child.id();
    let exit = Arc::new(Mutex::new(None));
    let slot = Arc::clone(&exit);
    thread::Builder::new()
        .name(format!("sandbox-reap-{pid}"))
        .spawn(move || {
            if let Ok(status) = child.wait()
                && let Ok(mut guard) = slot.lock()
            {
                *guard = Some(status);
            }
        })?;
    Ok(Spawned { pid, exit })
}

/// Whether `/proc` is available to inspect processes (Linux).
fn have_proc() -> bool {
    Path::new("/proc/self/stat").exists()
}

/// Whether process `pid` exists and is not a zombie.
///
/// Zombies count as gone: in containers whose pid 1 does not reap orphans
/// (this happens), a killed server stays a zombie forever. But every thread
/// is looked at, not only the main one: after SIGKILL the main thread of
/// `mariadbd` is a zombie while its other threads are still exiting, and
/// until the last one is gone the process still holds its port and files.
pub fn process_alive(pid: u32) -> bool {
    if !have_proc() {
        return signal(pid, "0").unwrap_or(false);
    }
    let Ok(tasks) = fs::read_dir(format!("/proc/{pid}/task")) else {
        return false;
    };
    tasks.flatten().any(|task| {
        fs::read_to_string(task.path().join("stat"))
            .map(|stat| !is_dead_state(&stat))
            .unwrap_or(false)
    })
}

/// Whether a `/proc/…/stat` line shows a zombie or dead task. The state is
/// the field after the parenthesised command name (which may hold spaces).
fn is_dead_state(stat: &str) -> bool {
    match stat.rsplit_once(')') {
        Some((_, rest)) => matches!(rest.trim_start().chars().next(), Some('Z' | 'X')),
        None => false,
    }
}

/// Whether process `pid` was started with exactly the argument `arg`.
/// `None` when that cannot be known (no `/proc`).
fn has_arg(pid: u32, arg: &str) -> Option<bool> {
    if !have_proc() {
        return None;
    }
    match fs::read(format!("/proc/{pid}/cmdline")) {
        Ok(bytes) => Some(bytes.split(|b| *b == 0).any(|a| a == arg.as_bytes())),
        Err(_) => Some(false),
    }
}

/// Reads a pid file; `None` if it is missing or does not hold a pid.
pub(super) fn read_pid_file(path: &Path) -> Option<u32> {
    fs::read_to_string(path)
        .ok()
        .and_then(|s| s.trim().parse::<u32>().ok())
        .filter(|pid| *pid > 1)
}

/// The pid of the server owning `pid_file`, if it is running. A stale pid
/// file (server killed with SIGKILL, pid since reused by another program)
/// does not count: the process must carry our `--socket=` argument.
pub(super) fn running_pid(pid_file: &Path, socket_arg: &str) -> Option<u32> {
    let pid = read_pid_file(pid_file)?;
    if !process_alive(pid) {
        return None;
    }
    match has_arg(pid, socket_arg) {
        Some(false) => None,
        Some(true) | None => Some(pid),
    }
}

/// Sends `sig` (a name such as `TERM`, `KILL`, or `0`) to `pid` with the
/// shell's `kill` builtin. `Ok(false)` when the process does not exist (or
/// is not ours to signal).
pub(super) fn signal(pid: u32, sig: &str) -> io::Result<bool> {
    let flag = if sig == "0" {
        "-0".to_string()
    } else {
        format!("-{sig}")
    };
    let status = Command::new("/bin/sh")
        .arg("-c")
        .arg("kill \"$1\" \"$2\" 2>/dev/null")
        .arg("sh")
        .arg(flag)
        .arg(pid.to_string())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()?;
    Ok(status.success())
}

/// Whether we run with effective uid 0 (then `mariadbd` needs `--user=root`).
pub(super) fn running_as_root() -> bool {
    // /proc/self is owned by the effective uid of the process (proc(5)).
    if let Ok(meta) = fs::metadata("/proc/self") {
        return meta.uid() == 0;
    }
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false)
}

/// The watchdog, a POSIX shell script. Arguments: the owner pid, then pairs
/// of (pid file, `--socket=` argument) of the servers to kill.
///
/// It polls the owner; once the owner is gone (or a zombie) it SIGKILLs every
/// server whose pid file names a live process started with that server's
/// socket argument. It exits early, killing nothing, once the servers were
/// stopped cleanly (no pid file left after at least one was seen), so a
/// `down` followed by reuse of the pids by others is harmless.
const WATCHDOG: &str = r#"
owner=$1; shift
any_pidfile() { while [ $# -ge 2 ]; do [ -f "$1" ] && return 0; shift 2; done; return 1; }
ours() {
  [ -r /proc/self/cmdline ] || return 0
  tr '\000' '\n' < "/proc/$1/cmdline" 2>/dev/null | grep -qxF -- "$2"
}
kill_all() {
  while [ $# -ge 2 ]; do
    p=$(cat "$1" 2>/dev/null)
    case "$p" in ''|*[!0-9]*) ;; *) ours "$p" "$2" && kill -9 "$p" 2>/dev/null ;; esac
    shift 2
  done
}
seen=0
while kill -0 "$owner" 2>/dev/null; do
  case "$(cat /proc/$owner/stat 2>/dev/null)" in *") Z "*) break ;; esac
  if any_pidfile "$@"; then seen=1; elif [ $seen = 1 ]; then exit 0; fi
  sleep 0.25
done
kill_all "$@"
"#;

/// Starts the watchdog for `owner`, detached (own process group, stdio on
/// /dev/null) so it survives the owner's death, which is its whole point.
pub(super) fn spawn_watchdog(owner: u32, servers: &[(PathBuf, String)]) -> io::Result<u32> {
    let mut cmd = Command::new("/bin/sh");
    cmd.arg("-c")
        .arg(WATCHDOG)
        .arg("rwproxy-sandbox-watchdog")
        .arg(owner.to_string());
    for (pid_file, socket_arg) in servers {
        cmd.arg(pid_file).arg(socket_arg);
    }
    cmd.stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    spawn_detached(&mut cmd).map(|s| s.pid)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn liveness_of_self_and_of_a_reaped_child() {
        assert!(process_alive(std::process::id()));
        let mut cmd = Command::new("true");
        let spawned = spawn_detached(&mut cmd).expect("spawn true");
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        while spawned.exit_status().is_none() && std::time::Instant::now() < deadline {
            thread::sleep(std::time::Duration::from_millis(10));
        }
        assert!(spawned.exit_status().is_some());
        assert!(!process_alive(spawned.pid));
        assert_eq!(signal(spawned.pid, "0").ok(), Some(false));
    }

    #[test]
    fn dead_states_are_read_after_the_command_name() {
        assert!(is_dead_state("123 (mariadbd) Z 1 2 3"));
        assert!(is_dead_state("123 (a) b) X 1"));
        assert!(!is_dead_state("123 (Z) Z) S 1"));
        assert!(!is_dead_state("123 (mariadbd) S 1"));
    }
}
