//! The binary cache (`[cache]`) against moto's S3 and local hosts: apply
//! uploads the closure once, every host substitutes it over plain HTTP,
//! and a path the cache cannot give goes over SSH, said so.

use std::collections::BTreeSet;

use crate::deploy::{built, profile, workspace, write_systems};
use crate::harness::{Moto, Workspace};

/// Four local hosts running one system, the cache in `nix-cache/test`.
fn setup(moto: &Moto) -> Workspace {
    moto.aws(&["s3api", "create-bucket", "--bucket", "nix-cache"]);
    let mut ws = workspace();
    ws.endpoint = Some(moto.endpoint.clone());
    write_systems(&ws, &[("node", "1", "sharedPaths = 12; sharedKiB = 256;")]);
    ws.write(
        "prov.toml",
        &format!(
            "deployment = \"cached\"\n\n[cache]\nurl = \"s3://nix-cache/test\"\n\
             substituter = \"{}/nix-cache/test\"\n\n\
             [hosts.node]\ntarget = \"local\"\ncount = 4\nnix = {{ file = \"v.nix\", attr = \"node\" }}\n",
            moto.endpoint
        ),
    );
    ws
}

/// `(key, size)` of every object under `prefix/`.
fn objects(moto: &Moto, prefix: &str) -> Vec<(String, u64)> {
    let out = moto.aws(&[
        "s3api",
        "list-objects-v2",
        "--bucket",
        "nix-cache",
        "--prefix",
        &format!("{prefix}/"),
    ]);
    out["Contents"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|o| {
            (
                o["Key"].as_str().unwrap().to_owned(),
                o["Size"].as_u64().unwrap(),
            )
        })
        .collect()
}

/// The store paths of `path`'s closure and their total NAR size.
fn closure(path: &str) -> (BTreeSet<String>, u64) {
    let run = |args: &[&str]| {
        let out = std::process::Command::new("nix-store")
            .args(args)
            .output()
            .unwrap();
        assert!(out.status.success());
        String::from_utf8(out.stdout).unwrap()
    };
    let paths: BTreeSet<String> = run(&["--query", "--requisites", path])
        .lines()
        .map(str::to_owned)
        .collect();
    let mut args = vec!["--query", "--size"];
    args.extend(paths.iter().map(String::as_str));
    let bytes = run(&args)
        .lines()
        .map(|l| l.trim().parse::<u64>().unwrap())
        .sum();
    (paths, bytes)
}

/// Every host's store checks clean, contents included.
fn verify_every_host(ws: &Workspace) {
    let run = ws.ok(&[
        "exec",
        "--",
        "nix-store --verify --check-contents 2>&1; echo verified",
    ]);
    assert_eq!(run.stdout.matches("verified").count(), 4, "{run}");
    for bad in ["corrupt", "modified", "error"] {
        assert!(!run.stdout.contains(bad), "{run}");
    }
}

#[test]
fn hosts_substitute_the_closure_the_deployer_sent_once_and_what_the_cache_lacks_goes_over_ssh() {
    let moto = Moto::start();
    let ws = setup(&moto);
    let plan = ws.ok(&["plan"]);
    assert!(
        plan.stdout.contains("from the cache s3://nix-cache/test"),
        "{plan}"
    );

    let apply = ws.ok(&["apply", "--auto-approve"]);
    let system = built(&ws, "node");
    let (paths, bytes) = closure(&system);
    assert!(
        apply.stdout.contains(&format!(
            "cache s3://nix-cache/test: uploaded {0} of {0} paths",
            paths.len()
        )),
        "{apply}"
    );
    assert_eq!(
        apply
            .stdout
            .matches(&format!("substituted {} paths from the cache", paths.len()))
            .count(),
        4,
        "every host substitutes the whole closure: {apply}"
    );
    assert_eq!(
        apply.stdout.matches("copied 0 paths, 0 B").count(),
        4,
        "{apply}"
    );
    // The deployer sent each path once: one uncompressed NAR per path,
    // exactly the closure's size, and one narinfo each.
    let stored = objects(&moto, "test");
    let nars: u64 = stored
        .iter()
        .filter(|(k, _)| k.ends_with(".nar"))
        .map(|(_, s)| s)
        .sum();
    let narinfos: Vec<_> = stored
        .iter()
        .filter(|(k, _)| k.ends_with(".narinfo"))
        .collect();
    let narinfo_bytes: u64 = narinfos.iter().map(|(_, s)| s).sum();
    assert_eq!(nars, bytes, "NAR bytes uploaded = the closure's size");
    assert_eq!(narinfos.len(), paths.len());
    let sent = nars + narinfo_bytes;
    println!(
        "cache: {} paths, closure {bytes} B; the deployer uploaded {sent} B ({:.3}x the closure) for 4 hosts",
        paths.len(),
        sent as f64 / bytes as f64
    );
    assert!(sent as f64 <= 1.1 * bytes as f64 + narinfo_bytes as f64);
    for i in 0..4 {
        assert_eq!(
            profile(&ws.host_dir("cached", &format!("node-{i}"))).as_deref(),
            Some(system.as_str())
        );
    }
    verify_every_host(&ws);
    let again = ws.prov(&["plan", "--detailed-exitcode"]);
    assert_eq!(again.code, 0, "{again}");

    // Version 2, with its payload's narinfo already in the cache but
    // pointing at a NAR that is not there: prov does not upload it again,
    // the hosts cannot substitute it, and it goes over SSH.
    write_systems(&ws, &[("node", "2", "sharedPaths = 12; sharedKiB = 256;")]);
    let v2 = built(&ws, "node");
    let (v2_paths, _) = closure(&v2);
    let payload = v2_paths
        .iter()
        .find(|p| p.contains("payload-node-2"))
        .unwrap()
        .clone();
    let hash = &payload["/nix/store/".len().."/nix/store/".len() + 32];
    let broken = ws.path().join("broken.narinfo");
    std::fs::write(
        &broken,
        format!(
            "StorePath: {payload}\nURL: nar/0000000000000000000000000000000000000000000000000000.nar\n\
             Compression: none\nNarHash: sha256:0000000000000000000000000000000000000000000000000000\n\
             NarSize: 1\nReferences: \n"
        ),
    )
    .unwrap();
    moto.aws(&[
        "s3",
        "cp",
        "--quiet",
        "--acl",
        "public-read",
        broken.to_str().unwrap(),
        &format!("s3://nix-cache/test/{hash}.narinfo"),
    ]);
    let apply = ws.ok(&["apply", "--auto-approve"]);
    // New in v2: the toplevel and the payload; the payload is "there".
    let new = v2_paths.difference(&paths).count();
    assert!(
        apply
            .stdout
            .contains(&format!("uploaded {} of {} paths", new - 1, v2_paths.len())),
        "{apply}"
    );
    assert_eq!(
        apply.stdout.matches("it lacks go over SSH").count(),
        4,
        "each host says what went over SSH: {apply}"
    );
    for i in 0..4 {
        assert_eq!(
            profile(&ws.host_dir("cached", &format!("node-{i}"))).as_deref(),
            Some(v2.as_str())
        );
    }
    verify_every_host(&ws);
    let again = ws.prov(&["plan", "--detailed-exitcode"]);
    assert_eq!(again.code, 0, "{again}");
}
