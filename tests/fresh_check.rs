//! `scripts/fresh-check.sh`: what it would purge, read with fake `apt-get`,
//! `apt-mark` and `dpkg-query` on PATH (without `--yes` it only lists, and
//! nothing on the machine is touched).

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;

use crate::harness::repo;

fn fake(dir: &Path, name: &str, script: &str) {
    let path = dir.join(name);
    std::fs::write(&path, format!("#!/bin/sh\n{script}")).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
}

/// A package whose purge apt refuses (the machine's own packages need it:
/// Debian's Java depends on `openssl`) is kept and said so, not listed as
/// purged. Stop 28's fresh-check listed it, `apt-get purge` then failed on
/// the whole list, and the step still said ok: nothing had been purged.
#[test]
fn a_package_apt_refuses_to_purge_is_kept_not_purged() {
    let dir = tempfile::tempdir().unwrap();
    let bin = dir.path().join("bin");
    std::fs::create_dir(&bin).unwrap();
    // Installed: age and openssl, nothing else.
    fake(
        &bin,
        "dpkg-query",
        r#"for last; do :; done
case "$last" in age|openssl) printf 'install ok installed' ;; *) exit 1 ;; esac
"#,
    );
    fake(
        &bin,
        "apt-get",
        r#"case "$*" in
  "-s purge openssl") echo "E: Error, pkgProblemResolver::Resolve generated breaks" >&2; exit 100 ;;
  "-s purge age") echo "Purg age [1.1.1-1]" ;;
  *) echo "unexpected apt-get $*" >&2; exit 1 ;;
esac
"#,
    );
    fake(&bin, "apt-mark", "exit 0\n");
    let path = format!("{}:{}", bin.display(), std::env::var("PATH").unwrap());
    let output = Command::new("bash")
        .arg(repo().join("scripts/fresh-check.sh"))
        .env("PATH", path)
        .env("HOME", dir.path())
        .env("PROV_TOOLS_DIR", dir.path().join("tools"))
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert_eq!(
        output.status.code(),
        Some(2),
        "without --yes it lists and stops:\n{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let section = |title: &str| -> Vec<String> {
        stdout
            .split(&format!("fresh-check: {title}"))
            .nth(1)
            .unwrap_or_else(|| panic!("no section {title:?} in:\n{stdout}"))
            .lines()
            .skip(1)
            .take_while(|l| l.starts_with("    "))
            .map(|l| l.trim().to_owned())
            .collect()
    };
    assert_eq!(section("packages to purge"), ["age"], "{stdout}");
    let kept = section("packages kept");
    assert_eq!(kept.len(), 1, "{stdout}");
    assert!(kept[0].starts_with("openssl ("), "{stdout}");
}
