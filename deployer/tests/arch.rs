//! A release whose server binary is built for another architecture than the image and
//! the instance type is refused before anything is launched, with one line naming both
//! (it would otherwise boot, fail to exec, and show only as a failed health gate).

mod common;

use common::setup;

/// The smallest file `deployer publish` accepts as an aarch64 Linux executable: an ELF
/// header with no program headers (a static binary, as far as the manifest is
/// concerned).
fn arm64_binary(path: &std::path::Path) {
    let mut elf = vec![0u8; 64];
    elf[..4].copy_from_slice(b"\x7fELF");
    elf[4] = 2; // 64-bit
    elf[5] = 1; // little-endian
    elf[6] = 1; // ELF version
    elf[16] = 2; // ET_EXEC
    elf[18..20].copy_from_slice(&183u16.to_le_bytes()); // EM_AARCH64
    std::fs::write(path, elf).expect("write the fake binary");
}

#[tokio::test(flavor = "multi_thread")]
async fn an_arm64_release_is_refused_on_an_x86_64_stack_before_launch() {
    let s = setup(harness::cloud::shared().moto());
    s.ok(&["init"]);
    s.ok(&["apply", "--auto-approve"]);
    let bin = s.dir.join("server-arm64");
    arm64_binary(&bin);
    s.ok(&[
        "publish",
        "--release",
        "arm1",
        "--server-binary",
        bin.to_str().expect("utf-8 path"),
    ]);
    // Probes (never reached) would go to a closed loopback port.
    let out = s.run(&[
        "deploy",
        "--release",
        "arm1",
        "--endpoint",
        "blue=http://127.0.0.1:9",
        "--endpoint",
        "green=http://127.0.0.1:9",
        "--health-deadline",
        "5s",
    ]);
    assert_eq!(out.code, 1, "{}", out.all());
    let line = out
        .stderr
        .lines()
        .find(|l| l.contains("cannot run on this stack"))
        .unwrap_or_else(|| panic!("no refusal line:\n{}", out.all()));
    assert!(
        line.contains("built for arm64") && line.contains("x86_64") && line.contains("ami-"),
        "{line}"
    );
    let d = s.deployer().await;
    let launched = deployer::instances::find_instances(&d.clients, &d.cfg)
        .await
        .expect("find instances");
    assert!(launched.is_empty(), "nothing may be launched: {launched:?}");
}
