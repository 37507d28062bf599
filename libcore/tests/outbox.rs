//! The notice outbox (issue 28): a delivery queued with every notice, on the member's
//! channel; printed letters rendered from the templates and marked sent once.

use chrono::{Duration, Utc};
use libcore::actor::Ctx;
use libcore::{circulation, holds, jobs, members, outbox};
use postgres::Client;

use crate::support;
use crate::support::*;

fn deliveries(c: &mut Client) -> Vec<(String, String, String)> {
    c.query(
        "SELECT n.kind, d.channel, d.status FROM notice_delivery d JOIN notice n ON n.id = d.notice_id
         ORDER BY n.kind, d.channel",
        &[],
    )
    .unwrap()
    .iter()
    .map(|r| (r.get(0), r.get(1), r.get(2)))
    .collect()
}

#[test]
fn every_notice_is_queued_on_its_members_channel_and_letters_print_once() {
    let tdb = TestDb::new();
    let mut c = tdb.client();
    let desk = admin(&mut c);
    let late = add_member(&mut c, "late@example.org", "member");
    let waiting = add_member(&mut c, "wait@example.org", "member");
    c.execute(
        "UPDATE member SET created_at = now() - interval '60 days'",
        &[],
    )
    .unwrap();
    members::set_notice_channel(&mut c, &desk, &late, "print").unwrap();
    let (one, two) = (add_book(&mut c, 1, 1), add_book(&mut c, 2, 1));
    let ago = Ctx {
        at: Some(Utc::now() - Duration::days(20)),
        ..desk.clone()
    };
    circulation::borrow(&mut c, &ago, &late, &one).unwrap();
    let out = circulation::borrow(&mut c, &desk, &late, &two).unwrap();
    holds::place(&mut c, &desk, &waiting, &two).unwrap();
    circulation::return_loan(&mut c, &desk, &circulation::LoanRef::Id(out.id)).unwrap();
    let today = Utc::now().date_naive();
    jobs::nightly(&mut c, &system(), today, false, &mut |_| Ok(())).unwrap();
    assert_eq!(
        deliveries(&mut c),
        [
            ("hold_ready".into(), "email".into(), "queued".into()),
            ("overdue".into(), "print".into(), "queued".into()),
        ]
    );

    let mut page = String::new();
    let printed = outbox::print(&mut c, &system(), today, None, &mut |html| {
        page = html.to_string();
        Ok(())
    })
    .unwrap();
    assert_eq!(printed, 1);
    assert!(
        page.contains("Reminder: &quot;Book 1&quot; is overdue"),
        "{page}"
    );
    assert!(page.contains("The fine so far is 6.00 EUR."), "{page}");
    assert!(page.contains("page-break-after: always"));
    let (subject, body): (String, String) = c
        .query_one(
            "SELECT subject, body FROM notice_delivery WHERE status = 'sent'",
            &[],
        )
        .map(|r| (r.get(0), r.get(1)))
        .unwrap();
    assert_eq!(subject, "Reminder: \"Book 1\" is overdue");
    assert!(body.starts_with("Dear Test late@example.org,"), "{body}");
    // Printed once: the next run has nothing, and a file that cannot be written marks nothing.
    let again = outbox::print(&mut c, &system(), today, None, &mut |_| Ok(())).unwrap();
    assert_eq!(again, 0);
    let listed = outbox::list(&mut c, &system(), Some("sent"), 10, None).unwrap();
    assert_eq!(listed.items.len(), 1);
    assert_eq!(listed.items[0].kind, "overdue");
    assert_invariants(&mut c);
}

#[test]
fn letters_that_cannot_be_handed_over_stay_queued() {
    let tdb = TestDb::new();
    let mut c = tdb.client();
    let desk = admin(&mut c);
    let late = add_member(&mut c, "late@example.org", "member");
    c.execute(
        "UPDATE member SET created_at = now() - interval '60 days', notice_channel = 'print'",
        &[],
    )
    .unwrap();
    let book = add_book(&mut c, 1, 1);
    let ago = Ctx {
        at: Some(Utc::now() - Duration::days(20)),
        ..desk
    };
    circulation::borrow(&mut c, &ago, &late, &book).unwrap();
    let today = Utc::now().date_naive();
    jobs::nightly(&mut c, &system(), today, false, &mut |_| Ok(())).unwrap();
    let err = outbox::print(&mut c, &system(), today, None, &mut |_| {
        Err(libcore::Error::io(
            "writing letters",
            std::io::Error::other("disk full"),
        ))
    })
    .unwrap_err();
    assert!(err.to_string().contains("disk full"), "{err}");
    assert_eq!(
        deliveries(&mut c),
        [("overdue".into(), "print".into(), "queued".into())]
    );
}

/// Members whose addresses steer the test server, each with a loan six days overdue, and the
/// nightly that queues their notices.
fn overdue_members(c: &mut Client, emails: &[&str]) {
    let desk = admin(c);
    for (n, email) in emails.iter().enumerate() {
        add_member(c, email, "member");
        c.execute(
            "UPDATE member SET created_at = now() - interval '60 days' WHERE email = $1",
            &[email],
        )
        .unwrap();
        let book = add_book(c, n as u32 + 1, 1);
        let ago = Ctx {
            at: Some(Utc::now() - Duration::days(20)),
            ..desk.clone()
        };
        circulation::borrow(c, &ago, email, &book).unwrap();
    }
    jobs::nightly(
        c,
        &system(),
        Utc::now().date_naive(),
        false,
        &mut |_| Ok(()),
    )
    .unwrap();
}

fn options(url: &str) -> outbox::SendOptions {
    outbox::SendOptions {
        smtp_url: url.to_string(),
        from: Some("desk@library.test".into()),
        per_minute: 6000,
        limit: None,
        dry_run: false,
        max_attempts: 5,
        template_dir: None,
    }
}

fn statuses(c: &mut Client) -> Vec<(String, String, i32)> {
    c.query(
        "SELECT m.email, d.status, d.attempts FROM notice_delivery d
         JOIN notice n ON n.id = d.notice_id JOIN member m ON m.id = n.member_id
         WHERE d.channel = 'email' ORDER BY m.email",
        &[],
    )
    .unwrap()
    .iter()
    .map(|r| (r.get(0), r.get(1), r.get(2)))
    .collect()
}

#[test]
fn email_goes_out_once_a_4xx_is_retried_and_a_5xx_fails_with_the_reply() {
    let Some(server) = support::smtp::SmtpServer::start() else {
        return;
    };
    let tdb = TestDb::new();
    let mut c = tdb.client();
    overdue_members(&mut c, &["ok@x.org", "tempfail@x.org", "reject@x.org"]);
    let dry = outbox::send(
        &mut c,
        &system(),
        &outbox::SendOptions {
            dry_run: true,
            ..options(&server.url())
        },
    )
    .unwrap();
    assert_eq!((dry.sent, dry.queued), (3, 3));
    assert!(server.received().is_empty(), "a dry run sends nothing");

    let first = outbox::send(&mut c, &system(), &options(&server.url())).unwrap();

    assert_eq!((first.sent, first.retrying, first.failed), (1, 1, 1));
    assert_eq!(
        statuses(&mut c),
        [
            ("ok@x.org".into(), "sent".into(), 1),
            ("reject@x.org".into(), "failed".into(), 1),
            ("tempfail@x.org".into(), "queued".into(), 1),
        ]
    );
    let reply: String = c
        .query_one(
            "SELECT d.last_error FROM notice_delivery d JOIN notice n ON n.id = d.notice_id
             JOIN member m ON m.id = n.member_id WHERE m.email = 'reject@x.org'",
            &[],
        )
        .unwrap()
        .get(0);
    assert!(
        reply.contains("550") || reply.contains("no such mailbox"),
        "{reply}"
    );
    // The retry waits for its backoff; after it, the message goes out.
    let early = outbox::send(&mut c, &system(), &options(&server.url())).unwrap();
    assert_eq!(early.sent, 0);
    let later = Ctx {
        at: Some(Utc::now() + Duration::minutes(2)),
        ..system()
    };
    let retried = outbox::send(&mut c, &later, &options(&server.url())).unwrap();
    assert_eq!((retried.sent, retried.queued), (1, 0));
    let received = server.received();
    assert_eq!(received.len(), 2, "{received:?}");
    assert_eq!(received[0]["to"][0], "ok@x.org");
    assert_eq!(received[1]["to"][0], "tempfail@x.org");
    assert!(received[0]["subject"]
        .as_str()
        .unwrap()
        .contains("is overdue"));
    assert!(received[0]["body"].as_str().unwrap().contains("6.00 EUR"));
    // Nothing more to send, ever.
    let again = outbox::send(&mut c, &later, &options(&server.url())).unwrap();
    assert_eq!(again.sent, 0);
    assert_eq!(server.received().len(), 2);
}

#[test]
fn a_server_that_is_down_marks_nothing_sent() {
    let tdb = TestDb::new();
    let mut c = tdb.client();
    overdue_members(&mut c, &["ok@x.org"]);
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = closed.local_addr().unwrap().port();
    drop(closed);
    let run = outbox::send(
        &mut c,
        &system(),
        &options(&format!("smtp://127.0.0.1:{port}")),
    )
    .unwrap();
    assert_eq!((run.sent, run.retrying, run.queued), (0, 1, 1));
    assert_eq!(statuses(&mut c), [("ok@x.org".into(), "queued".into(), 1)]);
}

#[test]
fn a_second_sender_exits_4_and_two_racing_senders_send_each_message_once() {
    let Some(server) = support::smtp::SmtpServer::start() else {
        return;
    };
    let tdb = TestDb::new();
    let mut c = tdb.client();
    overdue_members(&mut c, &["a@x.org", "b@x.org", "c@x.org", "d@x.org"]);
    let mut holder = tdb.client();
    holder
        .execute("SELECT pg_advisory_lock($1)", &[&outbox::SEND_LOCK_KEY])
        .unwrap();
    let refused = outbox::send(&mut c, &system(), &options(&server.url())).unwrap_err();
    assert_eq!(
        (refused.code(), refused.exit_code()),
        ("job_already_running", 4)
    );
    drop(holder);
    let url = server.url();
    let senders: Vec<_> = (0..2)
        .map(|_| {
            let mut client = tdb.client();
            let url = url.clone();
            std::thread::spawn(move || outbox::send(&mut client, &system(), &options(&url)))
        })
        .collect();
    let mut sent = 0;
    for s in senders {
        match s.join().unwrap() {
            Ok(run) => sent += run.sent,
            Err(e) => assert_eq!(e.code(), "job_already_running"),
        }
    }
    let mut to: Vec<String> = server
        .received()
        .iter()
        .map(|m| m["to"][0].as_str().unwrap().to_string())
        .collect();
    to.sort();
    assert_eq!(to, ["a@x.org", "b@x.org", "c@x.org", "d@x.org"]);
    assert_eq!(sent, 4);
}

#[test]
fn a_broken_template_refuses_the_run_before_anything_is_sent() {
    let Some(server) = support::smtp::SmtpServer::start() else {
        return;
    };
    let tdb = TestDb::new();
    let mut c = tdb.client();
    overdue_members(&mut c, &["ok@x.org"]);
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("courtesy.txt"),
        "Subject: {{ loan.title }}\n\n{{ loan.colour }}\n",
    )
    .unwrap();
    let err = outbox::send(
        &mut c,
        &system(),
        &outbox::SendOptions {
            template_dir: Some(dir.path().to_path_buf()),
            ..options(&server.url())
        },
    )
    .unwrap_err();
    assert_eq!((err.code(), err.exit_code()), ("invalid_template", 7));
    assert!(err.to_string().contains("courtesy.txt, line 3"), "{err}");
    assert!(server.received().is_empty());
    assert_eq!(statuses(&mut c), [("ok@x.org".into(), "queued".into(), 0)]);
}

#[test]
fn the_rate_spaces_the_messages() {
    let Some(server) = support::smtp::SmtpServer::start() else {
        return;
    };
    let tdb = TestDb::new();
    let mut c = tdb.client();
    overdue_members(&mut c, &["a@x.org", "b@x.org", "c@x.org", "d@x.org"]);
    let run = outbox::send(
        &mut c,
        &system(),
        &outbox::SendOptions {
            per_minute: 200,
            ..options(&server.url())
        },
    )
    .unwrap();
    assert_eq!(run.sent, 4);
    let times: Vec<f64> = server
        .received()
        .iter()
        .map(|m| m["time"].as_f64().unwrap())
        .collect();
    // 200 a minute: one every 0.3 s. The spacing, not the total, is what is checked.
    for pair in times.windows(2) {
        assert!(pair[1] - pair[0] >= 0.25, "{times:?}");
    }
}

#[test]
fn a_message_in_flight_when_the_sender_died_is_never_sent_again() {
    let Some(server) = support::smtp::SmtpServer::start() else {
        return;
    };
    let tdb = TestDb::new();
    let mut c = tdb.client();
    overdue_members(&mut c, &["a@x.org", "b@x.org"]);
    // What a sender killed after the server accepted a@'s message leaves behind.
    c.execute(
        "UPDATE notice_delivery d SET in_flight_since = now(), attempts = 1
         FROM notice n JOIN member m ON m.id = n.member_id
         WHERE n.id = d.notice_id AND m.email = 'a@x.org'",
        &[],
    )
    .unwrap();
    let run = outbox::send(&mut c, &system(), &options(&server.url())).unwrap();
    assert_eq!((run.unknown, run.sent), (1, 1));
    let received = server.received();
    assert_eq!(received.len(), 1);
    assert_eq!(received[0]["to"][0], "b@x.org");
    assert_eq!(
        statuses(&mut c),
        [
            ("a@x.org".into(), "failed".into(), 1),
            ("b@x.org".into(), "sent".into(), 1),
        ]
    );
}
