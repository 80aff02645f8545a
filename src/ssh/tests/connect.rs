//! Connecting: host key pinning, authentication, failures, jump hosts.

use std::time::{Duration, Instant};

use super::connect;
use super::sshd::{free_port, keygen, public_key_line, Agent, Sshd};
use crate::ssh::{Auth, Connection, HostKeyCheck, JumpHost, Options, SshError, Target};

#[tokio::test]
async fn pinned_key_is_accepted() {
    let sshd = Sshd::start();
    let connection = connect(&sshd).await;
    assert_eq!(connection.host_key(), sshd.host_key());
    assert_eq!(connection.jump_host_key(), None);
}

#[tokio::test]
async fn pinned_key_with_comment_and_spaces_is_accepted() {
    let sshd = Sshd::start();
    let check = HostKeyCheck::Pinned(format!("  {}  someone@somewhere\n", sshd.host_key()));
    let connection = Connection::connect(&sshd.target(), &check, &sshd.auth(), &Options::default())
        .await
        .unwrap();
    assert_eq!(connection.host_key(), sshd.host_key());
}

#[tokio::test]
async fn wrong_pinned_key_is_refused_before_authentication() {
    let sshd = Sshd::start();
    let other = sshd.path("other_host_key");
    keygen(&other, "ed25519");
    let wrong = public_key_line(&other.with_extension("pub"));
    let error = Connection::connect(
        &sshd.target(),
        &HostKeyCheck::Pinned(wrong.clone()),
        &sshd.auth(),
        &Options::default(),
    )
    .await
    .unwrap_err();
    let SshError::HostKeyMismatch {
        host,
        expected,
        presented,
    } = &error
    else {
        panic!("expected a host key mismatch, got {error}");
    };
    assert_eq!(host, &format!("127.0.0.1:{}", sshd.port));
    assert_eq!(expected, &wrong);
    assert_eq!(presented, &sshd.host_key());
    let message = error.to_string();
    assert!(
        message.contains(&sshd.host_key()) && message.contains(&wrong),
        "{message}"
    );
    assert!(
        message.contains("set host_key for it in the spec"),
        "{message}"
    );
    // The server saw the key exchange finish and the client hang up right
    // after, before authentication: no user name, no public key, no request.
    let closed_preauth =
        |line: &str| line.contains("Connection closed by") && line.ends_with("[preauth]");
    let log = sshd.wait_for_log(closed_preauth);
    assert!(log.lines().any(closed_preauth), "{log}");
    assert!(log.contains("KEX done"), "{log}");
    assert!(!log.contains("userauth"), "{log}");
    assert!(!log.contains("Accepted publickey"), "{log}");
}

#[tokio::test]
async fn accept_new_returns_the_server_key() {
    let sshd = Sshd::start();
    let connection = Connection::connect(
        &sshd.target(),
        &HostKeyCheck::AcceptNew,
        &sshd.auth(),
        &Options::default(),
    )
    .await
    .unwrap();
    assert_eq!(connection.host_key(), sshd.host_key());
}

#[tokio::test]
async fn unknown_identity_is_an_auth_error_listing_what_was_tried() {
    let sshd = Sshd::start();
    let stranger = sshd.path("stranger");
    keygen(&stranger, "ed25519");
    let missing = sshd.path("missing_key");
    let auth = Auth {
        identity_files: vec![missing.clone(), stranger.clone()],
        use_agent: true,
        agent_socket: Some(sshd.path("no-agent.sock")),
    };
    let error = Connection::connect(&sshd.target(), &sshd.pinned(), &auth, &Options::default())
        .await
        .unwrap_err();
    let SshError::Auth { user, host, tried } = &error else {
        panic!("expected an auth error, got {error}");
    };
    assert_eq!(user, "root");
    assert_eq!(host, &format!("127.0.0.1:{}", sshd.port));
    assert_eq!(tried.len(), 3, "{tried:?}");
    assert!(tried[0].contains(&missing.display().to_string()) && tried[0].contains("not usable"));
    assert!(tried[1].contains(&stranger.display().to_string()) && tried[1].ends_with("rejected"));
    assert!(tried[2].contains("ssh-agent") && tried[2].contains("cannot connect"));
    assert!(!sshd.log().contains("Accepted publickey"));
}

#[tokio::test]
async fn rsa_identity_authenticates() {
    let sshd = Sshd::start();
    let key = sshd.path("id_rsa");
    keygen(&key, "rsa");
    sshd.authorize(&key.with_extension("pub"));
    let auth = Auth {
        identity_files: vec![key],
        ..Auth::default()
    };
    let connection =
        Connection::connect(&sshd.target(), &sshd.pinned(), &auth, &Options::default())
            .await
            .unwrap();
    assert_eq!(connection.exec_checked("echo rsa").await.unwrap(), b"rsa\n");
    let log = sshd.wait_for_log(|line| line.contains("Accepted publickey"));
    assert!(log.contains("Accepted publickey for root"), "{log}");
    // Signed with SHA-512, the best hash OpenSSH offers, not SHA-1 `ssh-rsa`.
    assert!(log.contains("rsa-sha2-512"), "{log}");
}

#[tokio::test]
async fn agent_key_authenticates() {
    let sshd = Sshd::start();
    let agent = Agent::start(&sshd.path(""), &sshd.path("id_ed25519"));
    let auth = Auth {
        identity_files: vec![],
        use_agent: true,
        agent_socket: Some(agent.socket.clone()),
    };
    let connection =
        Connection::connect(&sshd.target(), &sshd.pinned(), &auth, &Options::default())
            .await
            .unwrap();
    assert_eq!(
        connection.exec_checked("echo agent").await.unwrap(),
        b"agent\n"
    );
}

#[tokio::test]
async fn refused_port_is_a_connect_error() {
    let port = free_port();
    let started = Instant::now();
    let error = Connection::connect(
        &Target::new("127.0.0.1", port, "root"),
        &HostKeyCheck::AcceptNew,
        &Auth::default(),
        &Options::default(),
    )
    .await
    .unwrap_err();
    assert!(
        matches!(&error, SshError::Connect { host, .. } if host == &format!("127.0.0.1:{port}")),
        "{error}"
    );
    assert!(started.elapsed() < Duration::from_secs(2));
}

#[tokio::test]
async fn silent_listener_times_out() {
    // Accepted by the kernel, never answered: no SSH banner ever comes.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let options = Options {
        connect_timeout: Duration::from_secs(1),
        ..Options::default()
    };
    let started = Instant::now();
    let error = Connection::connect(
        &Target::new("127.0.0.1", port, "root"),
        &HostKeyCheck::AcceptNew,
        &Auth::default(),
        &options,
    )
    .await
    .unwrap_err();
    let elapsed = started.elapsed();
    assert!(
        matches!(&error, SshError::Timeout { host, timeout }
            if host == &format!("127.0.0.1:{port}") && *timeout == Duration::from_secs(1)),
        "{error}"
    );
    assert!(
        elapsed >= Duration::from_secs(1) && elapsed < Duration::from_secs(3),
        "{elapsed:?}"
    );
    drop(listener);
}

#[tokio::test]
async fn jump_host_tunnels_to_the_target() {
    let jump = Sshd::start();
    let target_sshd = Sshd::start();
    // One client key for both hops.
    target_sshd.authorize(&jump.path("id_ed25519.pub"));
    let mut target = target_sshd.target();
    target.jump = Some(Box::new(JumpHost {
        target: jump.target(),
        check: jump.pinned(),
    }));
    let connection = Connection::connect(
        &target,
        &target_sshd.pinned(),
        &jump.auth(),
        &Options::default(),
    )
    .await
    .unwrap();
    assert_eq!(connection.host_key(), target_sshd.host_key());
    assert_eq!(connection.jump_host_key(), Some(jump.host_key().as_str()));
    assert_eq!(
        connection.exec_checked("echo through").await.unwrap(),
        b"through\n"
    );
    // The jump host forwarded a direct-tcpip channel to the target's port.
    let forwarded = format!("target 127.0.0.1 port {}", target_sshd.port);
    let tunnelled =
        |line: &str| line.contains("server_request_direct_tcpip") && line.ends_with(&forwarded);
    let log = jump.wait_for_log(tunnelled);
    assert!(log.lines().any(tunnelled), "{log}");
    connection.close().await;
}

#[tokio::test]
async fn wrong_jump_host_key_is_refused() {
    let jump = Sshd::start();
    let target_sshd = Sshd::start();
    let mut target = target_sshd.target();
    target.jump = Some(Box::new(JumpHost {
        target: jump.target(),
        // The target's key, not the jump host's.
        check: target_sshd.pinned(),
    }));
    let error = Connection::connect(
        &target,
        &target_sshd.pinned(),
        &jump.auth(),
        &Options::default(),
    )
    .await
    .unwrap_err();
    assert!(
        matches!(&error, SshError::HostKeyMismatch { host, .. } if host == &format!("127.0.0.1:{}", jump.port)),
        "{error}"
    );
}

#[tokio::test]
async fn tunnel_to_a_closed_port_is_a_tunnel_error() {
    let jump = Sshd::start();
    let port = free_port();
    let mut target = Target::new("127.0.0.1", port, "root");
    target.jump = Some(Box::new(JumpHost {
        target: jump.target(),
        check: jump.pinned(),
    }));
    let error = Connection::connect(
        &target,
        &HostKeyCheck::AcceptNew,
        &jump.auth(),
        &Options::default(),
    )
    .await
    .unwrap_err();
    let SshError::Tunnel {
        host,
        jump: via,
        reason,
    } = &error
    else {
        panic!("expected a tunnel error, got {error}");
    };
    assert_eq!(host, &format!("127.0.0.1:{port}"));
    assert_eq!(via, &format!("127.0.0.1:{}", jump.port));
    assert!(reason.contains("could not connect"), "{error}");
}
