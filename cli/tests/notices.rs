//! Notice delivery through the binary (issue 28): a member's channel, printed letters,
//! `notices send` to a real SMTP server, `nightly --send`, and the outbox.

use chrono::{Duration, Utc};
use libcore::actor::Ctx;
use libcore::circulation;

use crate::support::smtp;
use crate::support::*;
use crate::util::*;

#[test]
fn letters_print_emails_go_out_and_the_outbox_shows_them() {
    let Some(server) = smtp::SmtpServer::start() else {
        return;
    };
    let tdb = TestDb::new();
    let mut c = tdb.client();
    let desk = admin(&mut c);
    for (n, email) in ["paper@example.org", "mail@example.org"].iter().enumerate() {
        add_member(&mut c, email, "member");
        c.execute(
            "UPDATE member SET created_at = now() - interval '60 days' WHERE email = $1",
            &[email],
        )
        .unwrap();
        let book = add_book(&mut c, n as u32 + 1, 1);
        let ago = Ctx {
            at: Some(Utc::now() - Duration::days(20)),
            ..desk.clone()
        };
        circulation::borrow(&mut c, &ago, email, &book).unwrap();
    }
    Libctl::new(&tdb)
        .actor("paper@example.org")
        .args([
            "member",
            "notices",
            "paper@example.org",
            "--channel",
            "print",
        ])
        .run();
    Libctl::new(&tdb)
        .actor(ADMIN)
        .args([
            "policy",
            "set",
            "--library-name",
            "Riverside Library",
            "--currency",
            "GBP",
        ])
        .run();
    let night = Libctl::new(&tdb)
        .args([
            "nightly",
            "--summary-json",
            "--send",
            "--smtp-url",
            &server.url(),
        ])
        .run()
        .json();
    assert_eq!(night["sent"]["sent"], 1);
    let received = server.received();
    assert_eq!(received.len(), 1);
    assert_eq!(received[0]["to"][0], "mail@example.org");
    assert_eq!(received[0]["from"], "desk@library.test");
    let body = received[0]["body"].as_str().unwrap();
    assert!(
        body.contains("Riverside Library") && body.contains("6.00 GBP"),
        "{body}"
    );

    let dir = tempfile::tempdir().unwrap();
    let letters = dir.path().join("letters.html");
    Libctl::new(&tdb)
        .args(["notices", "print", "--format", "json", "--out"])
        .arg_path(&letters)
        .stderr_contains("1 letter(s) written")
        .run();
    let html = std::fs::read_to_string(&letters).unwrap();
    assert!(html.contains("Dear Test paper@example.org,"), "{html}");
    let sent = Libctl::new(&tdb)
        .args(["notices", "outbox", "--status", "sent", "--format", "json"])
        .run()
        .json();
    assert_eq!(sent["items"].as_array().unwrap().len(), 2, "{sent}");
    // Nothing left: a second send and a dry run find nothing, and say so.
    let again = Libctl::new(&tdb)
        .args([
            "notices",
            "send",
            "--smtp-url",
            &server.url(),
            "--dry-run",
            "--summary-json",
        ])
        .run()
        .json();
    assert_eq!(
        (again["sent"].clone(), again["queued"].clone()),
        (0.into(), 0.into())
    );
    // The password of an SMTP URL never shows.
    let refused = Libctl::new(&tdb)
        .args([
            "notices",
            "send",
            "--smtp-url",
            "ftp://u:s3cret@127.0.0.1:1",
        ])
        .status(7)
        .stderr_contains("--smtp-url")
        .run();
    assert!(!refused.stderr().contains("s3cret"), "{}", refused.stderr());
}

/// SIGKILL while the server holds its reply to a message it has received: the delivery stays
/// in flight, and the next sender marks it failed (outcome unknown) instead of sending it
/// again; the server has it once.
#[test]
fn a_sender_killed_mid_send_never_sends_the_message_twice() {
    let Some(server) = smtp::SmtpServer::start() else {
        return;
    };
    let tdb = TestDb::new();
    let mut c = tdb.client();
    let desk = admin(&mut c);
    add_member(&mut c, "slow@example.org", "member");
    c.execute(
        "UPDATE member SET created_at = now() - interval '60 days'",
        &[],
    )
    .unwrap();
    let book = add_book(&mut c, 1, 1);
    let ago = Ctx {
        at: Some(Utc::now() - Duration::days(20)),
        ..desk
    };
    circulation::borrow(&mut c, &ago, "slow@example.org", &book).unwrap();
    Libctl::new(&tdb).args(["nightly"]).run();
    let mut child = spawn(&tdb, &["notices", "send", "--smtp-url", &server.url()]);
    for _ in 0..400 {
        if !server.received().is_empty() {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(25));
    }
    assert_eq!(server.received().len(), 1, "the server has the message");
    child.kill().unwrap();
    child.wait().unwrap();
    let run = Libctl::new(&tdb)
        .args([
            "notices",
            "send",
            "--smtp-url",
            &server.url(),
            "--summary-json",
        ])
        .run()
        .json();
    assert_eq!(
        (run["unknown"].clone(), run["sent"].clone()),
        (1.into(), 0.into())
    );
    let failed = Libctl::new(&tdb)
        .args([
            "notices", "outbox", "--status", "failed", "--format", "json",
        ])
        .run()
        .json();
    assert!(
        failed["items"][0]["last_error"]
            .as_str()
            .unwrap()
            .contains("outcome unknown"),
        "{failed}"
    );
    assert_eq!(server.received().len(), 1, "never sent twice");
}
