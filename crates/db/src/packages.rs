//! What Till needs from the machine, installed when it is missing.
//!
//! The README's two commands (`till up`, the test suite) must work on a fresh machine with
//! only a Rust toolchain. When a system package they need is missing (the PostgreSQL
//! server; RabbitMQ for the tests of the broker), it is installed through the system's
//! package manager if Till can do that (apt-get, as root or with passwordless sudo), saying
//! what it installs; otherwise Till stops with one line that says exactly what to run.
//! `TILL_NO_INSTALL=1` turns installing off.

use std::process::{Command, Stdio};
use std::sync::Mutex;

/// One install at a time in this process (and a file lock for one across processes).
static INSTALLING: Mutex<()> = Mutex::new(());

/// Makes sure `present()` holds, installing the Debian `packages` (for `what`, in words)
/// if it does not. The error is one line that says what to run.
pub fn ensure(what: &str, packages: &[&str], present: impl Fn() -> bool) -> Result<(), String> {
    if present() {
        return Ok(());
    }
    let _installing = INSTALLING.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    // And one across processes: the test runner starts a process per test, and apt's
    // lock on its lists is refused, not waited for, while another `apt-get update` runs.
    let _across = across_processes();
    // Another thread or process may have installed it while this one waited.
    if present() {
        return Ok(());
    }
    let list = packages.join(" ");
    let advice = format!("{what} is not installed: run `sudo apt-get install -y {list}` (Debian/Ubuntu)");
    if std::env::var_os("TILL_NO_INSTALL").is_some_and(|value| !value.is_empty() && value != "0") {
        return Err(format!("{advice} (TILL_NO_INSTALL is set, so Till does not install it)"));
    }
    if !std::path::Path::new("/usr/bin/apt-get").exists() {
        return Err(format!("{what} is not installed: install it with your system's package manager ({list})"));
    }
    let root = nix::unistd::Uid::effective().is_root();
    let sudo = !root
        && Command::new("sudo")
            .args(["-n", "true"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|status| status.success());
    if !root && !sudo {
        return Err(advice);
    }
    eprintln!("Till needs {what}, which is missing: installing it with `apt-get install -y {list}`.");
    let apt = |args: &[&str]| {
        let mut command = if root { Command::new("apt-get") } else { Command::new("sudo") };
        if !root {
            command.args(["-n", "env", "DEBIAN_FRONTEND=noninteractive", "apt-get"]);
        }
        command
            .env("DEBIAN_FRONTEND", "noninteractive")
            // Wait for another apt (a second test binary, unattended upgrades) to finish.
            .args(["-o", "DPkg::Lock::Timeout=300", "-q"])
            .args(args)
            .stdin(Stdio::null())
            .status()
    };
    let updated = apt(&["update"]);
    if !updated.as_ref().is_ok_and(|status| status.success()) {
        return Err(format!("{advice} (`apt-get update` failed: {updated:?})"));
    }
    let mut install = vec!["install", "-y", "--no-install-recommends"];
    install.extend_from_slice(packages);
    let installed = apt(&install);
    if !installed.as_ref().is_ok_and(|status| status.success()) || !present() {
        return Err(format!("{advice} (installing it failed: {installed:?})"));
    }
    eprintln!("Installed {list}.");
    Ok(())
}

/// An exclusive lock on a file beside the other processes' (released when dropped);
/// `None` when the file cannot be had, and then apt's own locks are all there is.
fn across_processes() -> Option<nix::fcntl::Flock<std::fs::File>> {
    let path = std::env::temp_dir().join("till-install.lock");
    let file = std::fs::OpenOptions::new().create(true).truncate(false).write(true).open(path).ok()?;
    nix::fcntl::Flock::lock(file, nix::fcntl::FlockArg::LockExclusive).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn what_is_present_is_left_alone_and_what_is_not_is_named_with_its_command() {
        assert_eq!(ensure("a thing", &["thing"], || true), Ok(()));
        // With installing turned off, the answer is the one line to run.
        std::env::set_var("TILL_NO_INSTALL", "1");
        let refused = ensure("the Frobnicator", &["frobnicator", "frob-data"], || false);
        std::env::remove_var("TILL_NO_INSTALL");
        let advice = refused.expect_err("not present");
        assert!(advice.contains("sudo apt-get install -y frobnicator frob-data"), "{advice}");
        assert!(!advice.contains('\n'), "one line: {advice}");
    }
}
