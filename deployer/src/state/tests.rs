//! The state document's JSON: old files read unchanged and written back the same.

use super::*;

/// A state written before the release events were enums still reads, and writes
/// back the same strings.
#[test]
fn release_events_read_and_write_the_old_strings() {
    let old = r#"{
  "format": 1,
  "serial": 7,
  "lineage": "0a1b2c3d-0000-1111-2222-333344445555",
  "app": "churn-api",
  "resources": {},
  "release": {
"eip_holder": "blue",
"instances": {},
"last": {
  "operation": "rollback",
  "release": "r2",
  "at": "2026-01-02T03:04:05Z",
  "outcome": "failed: instance i-1 did not reach running: state None"
}
  }
}"#;
    let st: State = serde_json::from_str(old).unwrap();
    let last = st.release.last.clone().unwrap();
    assert_eq!(last.operation, ReleaseOperation::Rollback);
    assert_eq!(
        last.outcome,
        EventOutcome::Failed("instance i-1 did not reach running: state None".into())
    );
    let back: serde_json::Value = serde_json::to_value(&st).unwrap();
    let orig: serde_json::Value = serde_json::from_str(old).unwrap();
    assert_eq!(back, orig);

    let ok: ReleaseEvent = serde_json::from_str(
        r#"{"operation":"deploy","release":"r1","at":"2026-01-02T03:04:05Z","outcome":"ok"}"#,
    )
    .unwrap();
    assert_eq!(
        (ok.operation, ok.outcome.clone()),
        (ReleaseOperation::Deploy, EventOutcome::Ok)
    );
    assert_eq!(serde_json::to_value(&ok).unwrap()["outcome"], "ok");
    assert_eq!(serde_json::to_value(&ok).unwrap()["operation"], "deploy");
    // Anything else is not an outcome the deployer ever wrote.
    assert!(
        serde_json::from_str::<ReleaseEvent>(
            r#"{"operation":"deploy","release":"r1","at":"2026-01-02T03:04:05Z","outcome":"maybe"}"#,
        )
        .is_err()
    );
}

/// A state written with one instance per colour reads unchanged and writes back the
/// same JSON; a colour of three keeps all three, the first in `instance_id`.
#[test]
fn one_instance_colours_keep_their_shape_and_several_read_back() {
    let old = r#"{
  "format": 1,
  "serial": 3,
  "lineage": "0a1b2c3d-0000-1111-2222-333344445555",
  "app": "churn-api",
  "resources": {},
  "release": {
"eip_holder": "blue",
"instances": {
  "blue": {
    "instance_id": "i-1",
    "release": "r1",
    "ami": "ami-1",
    "launched_at": "2026-01-02T03:04:05Z",
    "model_version": null,
    "retire_after": null
  }
},
"last": null
  }
}"#;
    let mut st: State = serde_json::from_str(old).unwrap();
    let blue = &st.release.instances[&Color::Blue];
    assert_eq!(blue.ids(), ["i-1"]);
    let back = serde_json::to_value(&st).unwrap();
    assert_eq!(back, serde_json::from_str::<Value>(old).unwrap());

    let at = blue.launched_at;
    let blue = st.release.instances.get_mut(&Color::Blue).unwrap();
    for id in ["i-2", "i-3"] {
        blue.more.push(Member {
            instance_id: id.into(),
            launched_at: at,
        });
    }
    let again: State = serde_json::from_str(&serde_json::to_string(&st).unwrap()).unwrap();
    let blue = again.release.instances[&Color::Blue].clone();
    assert_eq!(blue.ids(), ["i-1", "i-2", "i-3"]);
    assert!(blue.has("i-3") && !blue.has("i-4"));
    let mut b = blue.clone();
    assert!(b.remove("i-1"));
    assert_eq!(b.ids(), ["i-2", "i-3"]);
    assert!(b.remove("i-3") && !b.remove("i-2"));
}
