//! The retry loops, on fake failures.

use std::cell::Cell;

use super::*;

fn failure(code: &str, attempt: u32) -> AwsError {
    AwsError {
        resource: "aws_iam_instance_profile.instance".into(),
        action: "AddRoleToInstanceProfile",
        code: code.into(),
        message: format!("attempt {attempt}"),
    }
}

fn quick(deadline_ms: u64) -> Backoff {
    Backoff {
        first_delay: Duration::from_millis(1),
        max_delay: Duration::from_millis(4),
        deadline: Duration::from_millis(deadline_ms),
        log_retries: false,
    }
}

#[test]
fn waits_double_up_to_the_cap() {
    let b = quick(100);
    let mut d = b.first_delay;
    let mut waits = vec![d];
    for _ in 0..4 {
        d = b.next_delay(d);
        waits.push(d);
    }
    let ms: Vec<u128> = waits.iter().map(Duration::as_millis).collect();
    assert_eq!(ms, [1, 2, 4, 4, 4]);
}

#[tokio::test]
async fn retries_a_not_yet_code_until_it_succeeds() {
    let attempts = Cell::new(0);
    let out = retry_while(
        quick(10_000),
        |e| e.code == "NoSuchEntity",
        || {
            attempts.set(attempts.get() + 1);
            let n = attempts.get();
            async move {
                if n < 3 {
                    Err(failure("NoSuchEntity", n))
                } else {
                    Ok(n)
                }
            }
        },
    )
    .await;
    assert_eq!(out.ok(), Some(3));
    assert_eq!(attempts.get(), 3);
}

#[tokio::test]
async fn another_code_fails_at_once() {
    let attempts = Cell::new(0);
    let out: Result<(), AwsError> = retry_while(
        quick(10_000),
        |e| e.code == "NoSuchEntity",
        || {
            attempts.set(attempts.get() + 1);
            let n = attempts.get();
            async move { Err(failure("AccessDenied", n)) }
        },
    )
    .await;
    let err = out.expect_err("fails");
    assert_eq!((err.code.as_str(), attempts.get()), ("AccessDenied", 1));
}

#[tokio::test]
async fn gives_up_at_the_deadline_with_the_last_error() {
    let attempts = Cell::new(0);
    let start = std::time::Instant::now();
    let out: Result<(), AwsError> = retry_while(
        quick(40),
        |_| true,
        || {
            attempts.set(attempts.get() + 1);
            let n = attempts.get();
            async move { Err(failure("NoSuchEntity", n)) }
        },
    )
    .await;
    let elapsed = start.elapsed();
    let err = out.expect_err("never succeeds");
    assert!(attempts.get() >= 3, "only {} attempts", attempts.get());
    // The last error, saying how long it was retried.
    assert!(
        err.message
            .starts_with(&format!("attempt {} (still refused after", attempts.get())),
        "{}",
        err.message
    );
    // It stops only when the next wait (4 ms at most) would pass the deadline, and
    // never waits longer than the cap.
    assert!(elapsed > Duration::from_millis(40 - 4), "{elapsed:?}");
    assert!(elapsed < Duration::from_millis(40 + 500), "{elapsed:?}");
}

#[tokio::test]
async fn logged_retries_say_how_long_they_tried_after_the_bound() {
    let attempts = Cell::new(0);
    let out: Result<(), AwsError> = retry_while(
        quick(20).logged(),
        |e| has_code(e, &["DependencyViolation"]),
        || {
            attempts.set(attempts.get() + 1);
            let n = attempts.get();
            async move { Err(failure("DependencyViolation", n)) }
        },
    )
    .await;
    let err = out.expect_err("never succeeds");
    assert_eq!(err.code, "DependencyViolation");
    assert!(
        err.message
            .starts_with(&format!("attempt {}", attempts.get()))
    );
    assert!(
        err.message.contains("still refused after"),
        "{}",
        err.message
    );
    // Another code is not retried.
    let once: Result<(), AwsError> = retry_while(
        quick(10_000).logged(),
        |e| has_code(e, &["DependencyViolation"]),
        || async { Err(failure("AccessDenied", 1)) },
    )
    .await;
    assert_eq!(once.expect_err("fails").message, "attempt 1");
}

#[tokio::test]
async fn poll_until_some_waits_for_a_value_or_names_what_it_awaited() {
    let reads = Cell::new(0);
    let got = poll_until_some(quick(10_000), "aws_subnet.main", "Read", "visible", || {
        reads.set(reads.get() + 1);
        let n = reads.get();
        async move { Ok((n >= 3).then_some(n)) }
    })
    .await;
    assert_eq!(got.ok(), Some(3));
    let never: Result<(), AwsError> =
        poll_until_some(quick(20), "aws_subnet.main", "Read", "visible", || async {
            Ok(None)
        })
        .await;
    let err = never.expect_err("times out");
    assert_eq!(
        (err.resource.as_str(), err.action, err.code.as_str()),
        ("aws_subnet.main", "Read", "NotYetConsistent")
    );
    assert!(
        err.message.starts_with("still not visible after"),
        "{}",
        err.message
    );
}
