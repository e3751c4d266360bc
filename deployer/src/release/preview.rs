//! What `deploy --release` would do, for `deployer plan --release`.

use super::ReleaseOptions;
use crate::state::{Color, State};

/// What `deploy --release` would do from `state`, in plan language (for
/// `deployer plan --release`).
pub fn cutover_preview(state: &State, release: &str, opts: &ReleaseOptions) -> String {
    let active = state.release.eip_holder;
    let idle = active.map(Color::other).unwrap_or(Color::Blue);
    let mut out = String::from("\nBlue/green cutover for release ");
    out.push_str(release);
    out.push_str(":\n");
    if let Some(old) = state.release.instances.get(&idle) {
        out.push_str(&format!(
            "  - aws_instance.{idle} ({}, release {}): replaced, it is the idle colour\n",
            old.instance_id, old.release
        ));
    }
    out.push_str(&format!(
        "  + aws_instance.{idle}: release {release}\n  ? health gate: /readyz ready and /version reporting {release} and the manifest's model, within {}s\n",
        opts.health_deadline.as_secs()
    ));
    match active.and_then(|c| state.release.instances.get(&c).map(|r| (c, r))) {
        Some((c, r)) => out.push_str(&format!(
            "  ~ aws_eip.api: {c} ({}, release {}) -> {idle} (new instance)\n  - aws_instance.{c} ({}): terminated after the {}s rollback window\n",
            r.instance_id,
            r.release,
            r.instance_id,
            opts.rollback_window.as_secs()
        )),
        None => out.push_str(&format!("  ~ aws_eip.api: (none) -> {idle} (new instance)\n")),
    }
    out
}

/// [`cutover_preview`] with `front = "nlb"`: `n` instances per colour behind the
/// balancer; the cutover is the listener's weight change (`canary`: a share first).
pub fn cutover_preview_nlb(
    state: &State,
    release: &str,
    n: u32,
    canary: Option<u8>,
    opts: &ReleaseOptions,
) -> String {
    let active = state.release.eip_holder;
    let idle = active.map(Color::other).unwrap_or(Color::Blue);
    let mut out = format!("\nBlue/green cutover for release {release} (behind aws_lb.api):\n");
    if let Some(old) = state.release.instances.get(&idle) {
        out.push_str(&format!(
            "  - aws_instance.{idle} ({}, release {}): deregistered and replaced, it is the idle colour\n",
            old.ids().join(", "),
            old.release
        ));
    }
    out.push_str(&format!(
        "  + aws_instance.{idle}: {n} x release {release}, across aws_subnet.main and aws_subnet.b, registered in aws_lb_target_group.{idle}\n  ? health gate: every target healthy in aws_lb_target_group.{idle}, and /readyz ready and /version reporting {release} and the manifest's model on each, within {}s\n",
        opts.health_deadline.as_secs()
    ));
    let live = active
        .map(|c| c.to_string())
        .unwrap_or_else(|| "blue (as created)".into());
    let weights = |to: Color, p: u8| {
        let (b, g) = if to == Color::Blue {
            (p, 100 - p)
        } else {
            (100 - p, p)
        };
        format!("blue {b}%, green {g}%")
    };
    let now = match active {
        Some(c) => weights(c, 100),
        None => weights(Color::Blue, 100),
    };
    if let (Some(p), Some(_)) = (canary, active) {
        out.push_str(&format!(
            "  ~ aws_lb_listener.api weights: {now} -> {} (canary, held for the soak while the 5xx rate stays under [canary] max_error_rate; else back to {live})\n",
            weights(idle, p)
        ));
    }
    out.push_str(&format!(
        "  ~ aws_lb_listener.api weights: {now} -> {} (the cutover)\n",
        weights(idle, 100)
    ));
    if let Some(r) = active.and_then(|c| state.release.instances.get(&c)) {
        out.push_str(&format!(
            "  - aws_instance.{} ({}): kept at weight 0, deregistered (draining) and terminated after the {}s rollback window\n",
            idle.other(),
            r.ids().join(", "),
            opts.rollback_window.as_secs()
        ));
    }
    out
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::state::InstanceRecord;

    #[test]
    fn behind_the_balancer_the_cutover_is_the_weight_change() {
        let mut st = State::empty("app");
        st.release.eip_holder = Some(Color::Blue);
        st.release.instances.insert(
            Color::Blue,
            InstanceRecord {
                instance_id: "i-1".into(),
                release: "r1".into(),
                ami: "ami-1".into(),
                launched_at: chrono::Utc::now(),
                model_version: None,
                retire_after: None,
                more: Vec::new(),
            },
        );
        let out = cutover_preview_nlb(&st, "r2", 3, Some(10), &ReleaseOptions::default());
        assert!(
            out.contains("+ aws_instance.green: 3 x release r2"),
            "{out}"
        );
        assert!(
            out.contains(
                "~ aws_lb_listener.api weights: blue 100%, green 0% -> blue 90%, green 10% (canary"
            ),
            "{out}"
        );
        assert!(
            out.contains("~ aws_lb_listener.api weights: blue 100%, green 0% -> blue 0%, green 100% (the cutover)"),
            "{out}"
        );
        assert!(
            out.contains("- aws_instance.blue (i-1): kept at weight 0"),
            "{out}"
        );
    }
}
