//! Running commands: output, status, signals, input streaming, concurrency, lost connections.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use sha2::{Digest, Sha256};

use super::connect;
use super::sshd::Sshd;
use crate::ssh::{shell_quote, SshError};

#[tokio::test]
async fn exec_returns_stdout_stderr_and_status() {
    let sshd = Sshd::start();
    let connection = connect(&sshd).await;
    let output = connection
        .exec("echo out; echo err >&2; exit 7")
        .await
        .unwrap();
    assert_eq!(output.status, Some(7));
    assert_eq!(output.signal, None);
    assert_eq!(String::from_utf8_lossy(&output.stdout), "out\n");
    // Root's ~/.bashrc on these machines runs `pyenv init`, which can write
    // its own complaints to stderr before the command runs: check the end.
    assert!(String::from_utf8_lossy(&output.stderr).ends_with("err\n"));
    assert!(!output.success());
    assert!(connection.is_root());
    assert_eq!(connection.address(), format!("127.0.0.1:{}", sshd.port));
    connection.close().await;
}

#[tokio::test]
async fn exec_checked_reports_status_and_stderr() {
    let sshd = Sshd::start();
    let connection = connect(&sshd).await;
    assert_eq!(
        connection.exec_checked("echo fine").await.unwrap(),
        b"fine\n"
    );
    let error = connection
        .exec_checked("echo oops >&2; exit 3")
        .await
        .unwrap_err();
    let SshError::Command {
        host,
        command,
        status,
        stderr,
        ..
    } = &error
    else {
        panic!("expected a command error, got {error}");
    };
    assert_eq!(host, &format!("127.0.0.1:{}", sshd.port));
    assert_eq!(command, "echo oops >&2; exit 3");
    assert_eq!(*status, Some(3));
    // The command's own output comes last (see exec_returns_stdout_stderr_and_status).
    assert_eq!(stderr.lines().last(), Some("oops"), "{stderr}");
    let message = error.to_string();
    assert!(message.contains("exited with status 3"), "{message}");
    assert!(message.contains("oops"), "{message}");
}

#[tokio::test]
async fn exec_reports_a_killing_signal() {
    let sshd = Sshd::start();
    let connection = connect(&sshd).await;
    let output = connection.exec("kill -TERM $$").await.unwrap();
    assert_eq!(output.status, None);
    assert_eq!(output.signal.as_deref(), Some("TERM"));
}

#[tokio::test]
async fn shell_quote_round_trips_through_the_remote_shell() {
    let sshd = Sshd::start();
    let connection = connect(&sshd).await;
    let word = "it's $HOME `id` \"q\" \\ ;|&\n*";
    let output = connection
        .exec_checked(&format!("printf %s {}", shell_quote(word)))
        .await
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&output), word);
    assert_eq!(shell_quote("web-0"), "web-0");
    assert_eq!(shell_quote("web[0]"), "'web[0]'");
    assert_eq!(shell_quote(""), "''");
    assert_eq!(shell_quote("a=b"), "'a=b'");
    // As root, privileged() leaves the command alone.
    assert_eq!(connection.privileged("id -u"), "id -u");
}

/// Deterministic, incompressible-looking bytes (xorshift).
fn pseudo_random(len: usize) -> Vec<u8> {
    let mut state: u64 = 0x9E37_79B9_7F4A_7C15;
    (0..len)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state >> 24) as u8
        })
        .collect()
}

#[tokio::test]
async fn exec_with_input_streams_20_mb() {
    let sshd = Sshd::start();
    let connection = connect(&sshd).await;
    let data = pseudo_random(20 * 1024 * 1024);
    let out = sshd.path("out");
    let sent = AtomicU64::new(0);
    let calls = AtomicU64::new(0);
    let progress = |total: u64| {
        assert!(
            total >= sent.load(Ordering::Relaxed),
            "progress went backwards"
        );
        sent.store(total, Ordering::Relaxed);
        calls.fetch_add(1, Ordering::Relaxed);
    };
    let command = format!("cat > {}", shell_quote(&out.display().to_string()));
    let output = connection
        .exec_with_input(&command, &data[..], &progress)
        .await
        .unwrap();
    assert!(output.success(), "{output:?}");
    assert_eq!(sent.load(Ordering::Relaxed), data.len() as u64);
    assert!(calls.load(Ordering::Relaxed) > 10);
    let written = fs_err::read(&out).unwrap();
    assert_eq!(written.len(), data.len());
    assert_eq!(
        hex::encode(Sha256::digest(&written)),
        hex::encode(Sha256::digest(&data))
    );
}

#[tokio::test]
async fn exec_with_input_returns_when_the_command_stops_reading() {
    let sshd = Sshd::start();
    let connection = connect(&sshd).await;
    let data = pseudo_random(8 * 1024 * 1024);
    let output = tokio::time::timeout(
        Duration::from_secs(20),
        connection.exec_with_input("head -c 10 >/dev/null; exit 4", &data[..], &|_| {}),
    )
    .await
    .expect("exec_with_input hung after the command exited")
    .unwrap();
    assert_eq!(output.status, Some(4));
}

#[tokio::test]
async fn concurrent_execs_share_one_connection() {
    let sshd = Sshd::start();
    let connection = Arc::new(connect(&sshd).await);
    let mut tasks = tokio::task::JoinSet::new();
    for index in 0..8 {
        let connection = Arc::clone(&connection);
        tasks.spawn(async move {
            let output = connection
                .exec_checked(&format!("sleep 0.2; echo {index}"))
                .await
                .unwrap();
            (index, output)
        });
    }
    let mut seen = Vec::new();
    while let Some(result) = tasks.join_next().await {
        let (index, output) = result.unwrap();
        assert_eq!(output, format!("{index}\n").into_bytes());
        seen.push(index);
    }
    seen.sort_unstable();
    assert_eq!(seen, (0..8).collect::<Vec<_>>());
    // One TCP connection, one authentication.
    assert_eq!(sshd.log().matches("Accepted publickey").count(), 1);
}

#[tokio::test]
async fn lost_connection_is_reported() {
    let sshd = Sshd::start();
    let connection = connect(&sshd).await;
    let running = connection.exec("sleep 30");
    tokio::pin!(running);
    // Let the command start, then kill the server side of the connection.
    assert!(
        tokio::time::timeout(Duration::from_millis(800), &mut running)
            .await
            .is_err()
    );
    sshd.kill_sessions();
    let error = tokio::time::timeout(Duration::from_secs(10), running)
        .await
        .expect("exec did not notice the lost connection")
        .unwrap_err();
    assert!(
        matches!(&error, SshError::ConnectionLost { command, .. } if command == "sleep 30"),
        "{error}"
    );
}
