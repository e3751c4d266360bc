//! What machine a server binary runs on, read from its ELF header: the architecture
//! (in EC2's words, `x86_64` or `arm64`) and, for a dynamically linked binary, its
//! program interpreter (`/lib64/ld-linux-x86-64.so.2`: glibc; none: static).
//!
//! `publish` records it in the release manifest, and a release is refused, with one
//! line, when the AMI or the instance type cannot run it: an arm64 binary on an x86_64
//! image would otherwise boot, fail to exec, and only show up as a failed health gate.

use std::fmt;

use serde::{Deserialize, Serialize};

/// A CPU architecture, named as EC2 names them (`DescribeImages`' `Architecture`,
/// `DescribeInstanceTypes`' `SupportedArchitectures`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Arch {
    #[serde(rename = "x86_64")]
    X86_64,
    #[serde(rename = "arm64")]
    Arm64,
}

impl Arch {
    pub fn as_str(self) -> &'static str {
        match self {
            Arch::X86_64 => "x86_64",
            Arch::Arm64 => "arm64",
        }
    }

    /// EC2's name (`x86_64`, `arm64`); others (`i386`, `x86_64_mac`) are not ours.
    pub fn from_ec2(name: &str) -> Option<Arch> {
        match name {
            "x86_64" => Some(Arch::X86_64),
            "arm64" => Some(Arch::Arm64),
            _ => None,
        }
    }
}

impl fmt::Display for Arch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The machine a binary is built for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BinaryTarget {
    pub arch: Arch,
    /// The dynamic loader it asks for; `None` for a static binary.
    pub interpreter: Option<String>,
}

impl fmt::Display for BinaryTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.interpreter {
            Some(i) => write!(f, "{} linux, dynamic ({i})", self.arch),
            None => write!(f, "{} linux, static", self.arch),
        }
    }
}

/// Why a file is not a binary the instances can run.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct NotRunnable(String);

const EM_X86_64: u16 = 62;
const EM_AARCH64: u16 = 183;
const ET_EXEC: u16 = 2;
const ET_DYN: u16 = 3;
const PT_INTERP: u32 = 3;

fn u16_at(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_le_bytes(b.get(at..at + 2)?.try_into().ok()?))
}
fn u32_at(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_le_bytes(b.get(at..at + 4)?.try_into().ok()?))
}
fn u64_at(b: &[u8], at: usize) -> Option<u64> {
    Some(u64::from_le_bytes(b.get(at..at + 8)?.try_into().ok()?))
}

/// Reads the target of a 64-bit little-endian Linux ELF executable.
pub fn detect(bytes: &[u8]) -> Result<BinaryTarget, NotRunnable> {
    let bad = |why: &str| NotRunnable(why.to_string());
    if bytes.get(..4) != Some(b"\x7fELF".as_slice()) {
        return Err(bad(
            "not an ELF executable (a script or another OS's binary cannot be the server)",
        ));
    }
    if bytes.get(4) != Some(&2) || bytes.get(5) != Some(&1) {
        return Err(bad("not a 64-bit little-endian ELF file"));
    }
    let kind = u16_at(bytes, 16).ok_or_else(|| bad("truncated ELF header"))?;
    if kind != ET_EXEC && kind != ET_DYN {
        return Err(bad(
            "an ELF file, but not an executable (an object file or a core dump?)",
        ));
    }
    let arch = match u16_at(bytes, 18).ok_or_else(|| bad("truncated ELF header"))? {
        EM_X86_64 => Arch::X86_64,
        EM_AARCH64 => Arch::Arm64,
        other => {
            return Err(NotRunnable(format!(
                "built for ELF machine {other}, neither x86_64 nor aarch64"
            )));
        }
    };
    let phoff = u64_at(bytes, 32).ok_or_else(|| bad("truncated ELF header"))? as usize;
    let phentsize = u16_at(bytes, 54).ok_or_else(|| bad("truncated ELF header"))? as usize;
    let phnum = u16_at(bytes, 56).ok_or_else(|| bad("truncated ELF header"))? as usize;
    let mut interpreter = None;
    for i in 0..phnum {
        let ph = phoff + i * phentsize;
        if u32_at(bytes, ph) != Some(PT_INTERP) {
            continue;
        }
        let off = u64_at(bytes, ph + 8).ok_or_else(|| bad("truncated program header"))? as usize;
        let len = u64_at(bytes, ph + 32).ok_or_else(|| bad("truncated program header"))? as usize;
        let raw = bytes
            .get(off..off.saturating_add(len))
            .ok_or_else(|| bad("the interpreter path lies outside the file"))?;
        let path = raw.split(|b| *b == 0).next().unwrap_or_default();
        interpreter = Some(String::from_utf8_lossy(path).into_owned());
    }
    Ok(BinaryTarget { arch, interpreter })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_running_test_binary() {
        let me = std::fs::read(std::env::current_exe().unwrap()).unwrap();
        let t = detect(&me).unwrap();
        let want = if cfg!(target_arch = "x86_64") {
            Arch::X86_64
        } else {
            Arch::Arm64
        };
        assert_eq!(t.arch, want);
        // Test binaries link glibc dynamically on this toolchain's default target.
        if cfg!(all(target_env = "gnu", not(target_feature = "crt-static"))) {
            assert!(
                t.interpreter
                    .as_deref()
                    .is_some_and(|i| i.contains("ld-linux")),
                "{t}"
            );
        }
    }

    #[test]
    fn refuses_what_is_not_a_linux_executable() {
        assert!(detect(b"#!/bin/sh\necho hi\n").is_err());
        assert!(detect(b"").is_err());
        let mut arm = vec![0u8; 64];
        arm[..4].copy_from_slice(b"\x7fELF");
        arm[4] = 2;
        arm[5] = 1;
        arm[16] = ET_EXEC as u8;
        arm[18..20].copy_from_slice(&EM_AARCH64.to_le_bytes());
        assert_eq!(
            detect(&arm).unwrap(),
            BinaryTarget {
                arch: Arch::Arm64,
                interpreter: None
            }
        );
        let mut i386 = arm.clone();
        i386[18..20].copy_from_slice(&3u16.to_le_bytes());
        assert!(detect(&i386).unwrap_err().to_string().contains("machine 3"));
        let mut object = arm;
        object[16] = 1;
        assert!(detect(&object).is_err());
    }

    #[test]
    fn arch_names_are_ec2s() {
        for a in [Arch::X86_64, Arch::Arm64] {
            assert_eq!(Arch::from_ec2(a.as_str()), Some(a));
            assert_eq!(serde_json::to_value(a).unwrap(), a.as_str());
        }
        assert_eq!(Arch::from_ec2("i386"), None);
    }
}
