//! Two applies on one embedded state: one runs, the other names the holder;
//! nothing is lost.

use std::io::{BufRead, BufReader};
use std::process::Stdio;

use crate::harness::{ec2_spec, Moto, Workspace};

#[test]
fn second_apply_names_the_lock_holder_and_nothing_is_lost() {
    let moto = Moto::start();
    let ws = Workspace::with_moto(&moto);
    ws.write(
        "prov.toml",
        &ec2_spec("locks", 3, "t3.micro", "ami-12c6146b"),
    );

    // The first apply pauses (holding the lock) after its first create.
    let mut first = ws
        .command(&["apply", "--auto-approve"])
        .env("PROV_TEST_PAUSE_AT", "after-create:1")
        .env("PROV_TEST_PAUSE_SECS", "4")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(first.stderr.take().unwrap()).lines();
    let paused = lines
        .by_ref()
        .take(10_000)
        .map(Result::unwrap)
        .any(|l| l.contains("prov: paused at"));
    assert!(paused);

    let second = ws.prov(&["apply", "--auto-approve"]);
    assert_eq!(second.code, 1, "{second}");
    assert!(second.stderr.contains("state is locked by"), "{second}");
    assert!(
        second.stderr.contains(&format!("(pid {})", first.id())),
        "{second}"
    );
    assert!(second.stderr.contains("for `apply`"), "{second}");
    assert!(
        second.stderr.contains("prov state force-unlock"),
        "{second}"
    );

    // Drain the rest of stderr so the first run never blocks on a full pipe.
    let drain = std::thread::spawn(move || lines.take(100_000).count());
    let status = first.wait().unwrap();
    drain.join().unwrap();
    assert!(status.success());

    // A waiting run gets the lock once it is free and finds nothing to do.
    let plan = ws.prov(&["plan", "--detailed-exitcode", "--lock-timeout", "20s"]);
    assert_eq!(plan.code, 0, "{plan}");
    assert_eq!(moto.instances("locks").len(), 3);
    let state = ws.state();
    assert_eq!(state["resources"].as_object().unwrap().len(), 5);
}

#[test]
fn lock_timeout_waits_for_the_holder() {
    let moto = Moto::start();
    let ws = Workspace::with_moto(&moto);
    ws.write(
        "prov.toml",
        &ec2_spec("waits", 1, "t3.micro", "ami-12c6146b"),
    );
    let mut first = ws
        .command(&["apply", "--auto-approve"])
        .env("PROV_TEST_PAUSE_AT", "before-create:1")
        .env("PROV_TEST_PAUSE_SECS", "2")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(first.stderr.take().unwrap()).lines();
    assert!(lines
        .by_ref()
        .take(10_000)
        .map(Result::unwrap)
        .any(|l| l.contains("paused")));
    let second = ws.prov(&["apply", "--auto-approve", "--lock-timeout", "30s"]);
    assert_eq!(second.code, 0, "{second}");
    assert!(first.wait().unwrap().success());
    assert_eq!(moto.instances("waits").len(), 1);
}
