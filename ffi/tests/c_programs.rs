//! The C side of the ABI, from `cargo test`: the header against the built library (every
//! declared function exported, nothing else exported), and C programs compiled against the
//! header with -Wall -Wextra -Werror, linked with libpocketlora.a or libpocketlora.so, run,
//! and their output checked: the example (`examples/personalize.c`), misuse, cancellation
//! and the rest of the API (`tests/c/*.c`).
//!
//! Environment (all optional), for cross builds and checkers:
//! - `PLORA_CC` (else `CC`, else `cc`): the C compiler; `PLORA_NM` (else `nm`).
//! - `PLORA_C_RUNNER`: a command prefix for running the compiled programs, e.g.
//!   `qemu-aarch64-static -L /usr/aarch64-linux-gnu` or `valgrind --error-exitcode=99`.
//! - `PLORA_C_CANCEL_ARGS`: records per step and tokens per record for `cancel.c` (default
//!   48 and 128), e.g. `8 32` under valgrind, where a step of the default takes minutes.
//! - `PLORA_FFI_LIB_DIR`: where libpocketlora.{a,so} are (default: the directory cargo put
//!   this test's dependencies in, i.e. `target/[TRIPLE/]PROFILE`).

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;

use pocketlora_core::internals::gguf::{GgufFile, GgufWriter, Value};

fn ffi_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn asset(name: &str) -> PathBuf {
    ffi_dir().join("../assets").join(name)
}

/// target/[TRIPLE/]PROFILE, where cargo leaves libpocketlora.{a,so}, freshly built.
///
/// `cargo test` does not build a library that is only a cdylib and a staticlib (nothing
/// links to it), so the first test to need it runs `cargo build` for it — the same build
/// `cargo build` makes, into the same directory — unless `PLORA_FFI_LIB_DIR` names
/// prebuilt libraries.
fn lib_dir() -> PathBuf {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        if let Some(d) = std::env::var_os("PLORA_FFI_LIB_DIR") {
            return PathBuf::from(d);
        }
        let exe = std::env::current_exe().expect("test executable path");
        // target/[TRIPLE/]PROFILE/deps/c_programs-HASH
        let profile_dir = exe
            .parent()
            .and_then(Path::parent)
            .expect("target directory")
            .to_path_buf();
        let profile = profile_dir
            .file_name()
            .unwrap()
            .to_string_lossy()
            .into_owned();
        let parent = profile_dir.parent().unwrap();
        // The target directory's root holds CACHEDIR.TAG (when cargo created it) and is not
        // named like a triple (arch-vendor-os...); otherwise the parent is a triple.
        let name = parent
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let looks_like_triple = name.matches('-').count() >= 2;
        let (target_dir, triple) = if parent.join("CACHEDIR.TAG").exists() || !looks_like_triple {
            (parent.to_path_buf(), None)
        } else {
            let t = parent.file_name().unwrap().to_string_lossy().into_owned();
            (parent.parent().unwrap().to_path_buf(), Some(t))
        };
        let mut cmd = Command::new(env!("CARGO"));
        // The whole workspace, as `cargo test` at the root built it: the same features of
        // the pocketlora crate, so nothing but this library is compiled again.
        cmd.args(["build", "--quiet", "--workspace", "--target-dir"])
            .arg(&target_dir)
            .current_dir(ffi_dir());
        match profile.as_str() {
            "release" => {
                cmd.arg("--release");
            }
            "debug" => {}
            other => {
                cmd.args(["--profile", other]);
            }
        }
        if let Some(t) = &triple {
            cmd.args(["--target", t]);
        }
        let o = cmd.output().expect("running cargo build");
        assert!(
            o.status.success(),
            "cargo build of the C library failed:\n{}",
            String::from_utf8_lossy(&o.stderr)
        );
        profile_dir
    })
    .clone()
}

fn env_or(names: &[&str], default: &str) -> String {
    names
        .iter()
        .find_map(|n| std::env::var(n).ok().filter(|v| !v.trim().is_empty()))
        .unwrap_or_else(|| default.to_string())
}

/// A scratch directory for this test binary's outputs.
fn work_dir(tag: &str) -> PathBuf {
    let d = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("ffi-c-{}", std::process::id()))
        .join(tag);
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).expect("scratch dir");
    d
}

#[derive(Clone, Copy, PartialEq)]
enum Link {
    Static,
    Shared,
}

/// Compiles `sources` into `out` against the header and the library.
fn compile(sources: &[PathBuf], out: &Path, link: Link) {
    let cc = env_or(&["PLORA_CC", "CC"], "cc");
    let lib = lib_dir();
    let mut cmd = Command::new(&cc);
    cmd.args([
        "-std=c11",
        "-O1",
        "-g",
        "-Wall",
        "-Wextra",
        "-Werror",
        "-pedantic",
    ])
    .arg("-I")
    .arg(ffi_dir().join("include"))
    .args(sources)
    .arg("-o")
    .arg(out);
    match link {
        Link::Static => {
            cmd.arg(lib.join("libpocketlora.a"));
        }
        Link::Shared => {
            cmd.arg("-L")
                .arg(&lib)
                .arg("-lpocketlora")
                .arg(format!("-Wl,-rpath,{}", lib.display()));
        }
    }
    // rustc's native-static-libs for Linux targets.
    cmd.args(["-lpthread", "-ldl", "-lm", "-lrt", "-lutil", "-lgcc_s"]);
    let o = cmd.output().unwrap_or_else(|e| panic!("{cc}: {e}"));
    assert!(
        o.status.success(),
        "compiling {:?} failed:\n{}",
        sources,
        String::from_utf8_lossy(&o.stderr)
    );
}

/// Runs a compiled program (through `PLORA_C_RUNNER` if set).
fn run(exe: &Path, args: &[&str]) -> Output {
    let runner = env_or(&["PLORA_C_RUNNER"], "");
    let mut parts = runner.split_whitespace();
    let mut cmd = match parts.next() {
        Some(first) => {
            let mut c = Command::new(first);
            c.args(parts).arg(exe);
            c
        }
        None => Command::new(exe),
    };
    cmd.args(args)
        .output()
        .unwrap_or_else(|e| panic!("running {}: {e}", exe.display()))
}

fn text(o: &Output) -> (String, String) {
    (
        String::from_utf8_lossy(&o.stdout).into_owned(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

/// Compiles and runs a test program from tests/c; it prints one line per check and exits
/// 0 when all passed.
fn c_test(name: &str, link: Link, args: &[&str]) -> String {
    let dir = work_dir(name);
    let exe = dir.join(name);
    compile(
        &[ffi_dir().join("tests/c").join(format!("{name}.c"))],
        &exe,
        link,
    );
    let mut full: Vec<String> = vec![
        asset("aidreams260K-q8_0.gguf").display().to_string(),
        dir.display().to_string(),
    ];
    full.extend(args.iter().map(|s| s.to_string()));
    let refs: Vec<&str> = full.iter().map(String::as_str).collect();
    let o = run(&exe, &refs);
    let (out, err) = text(&o);
    println!("{out}");
    eprintln!("{err}");
    assert!(
        o.status.success(),
        "{name} failed ({}):\n{out}\n{err}",
        o.status
    );
    assert!(!out.contains("FAIL"), "{out}");
    std::fs::remove_dir_all(&dir).ok();
    out
}

/// The functions the header declares: `plora_name(` outside comments (function-pointer
/// typedefs read `(*plora_name)(`).
fn header_functions() -> BTreeSet<String> {
    let h = std::fs::read_to_string(ffi_dir().join("include/pocketlora.h")).unwrap();
    // Strip /* */ and // comments.
    let mut code = String::new();
    let mut rest = h.as_str();
    while let Some(i) = rest.find("/*") {
        code.push_str(&rest[..i]);
        rest = &rest[i + 2..];
        rest = rest.find("*/").map_or("", |j| &rest[j + 2..]);
    }
    code.push_str(rest);
    let code: String = code
        .lines()
        .map(|l| l.split("//").next().unwrap_or(""))
        .collect::<Vec<_>>()
        .join("\n");
    let b = code.as_bytes();
    let mut out = BTreeSet::new();
    let mut i = 0;
    while let Some(off) = code[i..].find("plora_") {
        let start = i + off;
        let mut end = start;
        while end < b.len() && (b[end].is_ascii_alphanumeric() || b[end] == b'_') {
            end += 1;
        }
        let after = code[end..].trim_start().chars().next();
        let word_start =
            start == 0 || !(b[start - 1].is_ascii_alphanumeric() || b[start - 1] == b'_');
        if word_start && after == Some('(') {
            out.insert(code[start..end].to_string());
        }
        i = end;
    }
    out
}

#[test]
fn the_header_declares_exactly_what_the_library_exports() {
    let declared = header_functions();
    assert!(declared.len() > 30, "{declared:?}");
    let nm = env_or(&["PLORA_NM"], "nm");
    let so = lib_dir().join("libpocketlora.so");
    let o = Command::new(&nm)
        .args(["-D", "--defined-only"])
        .arg(&so)
        .output()
        .unwrap_or_else(|e| panic!("{nm}: {e}"));
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let exported: BTreeSet<String> = String::from_utf8_lossy(&o.stdout)
        .lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            match f.as_slice() {
                [_, "T", name] if name.starts_with("plora_") => Some(name.to_string()),
                _ => None,
            }
        })
        .collect();
    let missing: Vec<_> = declared.difference(&exported).collect();
    let undeclared: Vec<_> = exported.difference(&declared).collect();
    assert!(
        missing.is_empty() && undeclared.is_empty(),
        "declared but not exported: {missing:?}; exported but not declared: {undeclared:?}"
    );
    // Every declared function links from C with its declared type, statically and shared.
    let dir = work_dir("symbols");
    let src = dir.join("all_symbols.c");
    let mut c = String::from(
        "#include <stdio.h>\n#include \"pocketlora.h\"\ntypedef void (*any_fn)(void);\nint main(void) {\n    /* volatile: every function is referenced and must link */\n    any_fn volatile fns[] = {\n",
    );
    for f in &declared {
        c += &format!("        (any_fn)&{f},\n");
    }
    c += "    };\n    size_t n = 0;\n    for (size_t i = 0; i < sizeof fns / sizeof fns[0]; i++) n += fns[i] != NULL;\n    printf(\"%zu %s\\n\", n, plora_version());\n    return 0;\n}\n";
    std::fs::write(&src, c).unwrap();
    for (link, exe) in [(Link::Static, "all_static"), (Link::Shared, "all_shared")] {
        let exe = dir.join(exe);
        compile(std::slice::from_ref(&src), &exe, link);
        let o = run(&exe, &[]);
        let (out, err) = text(&o);
        assert!(o.status.success(), "{out}{err}");
        assert_eq!(
            out.trim(),
            format!("{} {}", declared.len(), env!("CARGO_PKG_VERSION"))
        );
    }
    std::fs::remove_dir_all(&dir).ok();
}

/// The losses printed by `step N/M loss X` lines.
fn losses(out: &str) -> Vec<f64> {
    out.lines()
        .filter(|l| l.starts_with("step "))
        .filter_map(|l| l.split_whitespace().nth(3)?.parse().ok())
        .collect()
}

#[test]
fn the_example_personalizes_the_bundled_model() {
    let dir = work_dir("personalize");
    let exe = dir.join("personalize");
    // Linked with the shared library, as an app that ships libpocketlora.so.
    compile(
        &[ffi_dir().join("examples/personalize.c")],
        &exe,
        Link::Shared,
    );
    let adapter = dir.join("adapter");
    let model = asset("aidreams260K-q8_0.gguf");
    let o = run(
        &exe,
        &[model.to_str().unwrap(), adapter.to_str().unwrap(), "60"],
    );
    let (out, err) = text(&o);
    println!("{out}");
    assert!(o.status.success(), "{out}\n{err}");
    let l = losses(&out);
    assert!(l.len() >= 3, "{out}");
    let (first, last) = (l[0], *l.last().unwrap());
    assert!(
        first > 3.0 && last < first / 3.0,
        "the loss must fall: {first} -> {last}"
    );
    assert!(out.contains(&format!("saved adapter to {}", adapter.display())));
    for f in ["adapter_model.safetensors", "adapter_config.json"] {
        assert!(adapter.join(f).is_file(), "{f} missing");
    }
    let generated: Vec<&str> = out
        .lines()
        .filter_map(|l| l.strip_prefix("generated: "))
        .collect();
    assert_eq!(generated.len(), 2, "{out}");
    // Continued past the prompt, and (trained for long enough) with the taught sentence.
    assert!(generated[0].len() > "Our wifi password".len() + 3, "{out}");
    assert!(
        generated[0].contains("orange tiger seven"),
        "the adapter did not teach the sentence: {out}"
    );
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn misuse_gives_error_codes_not_crashes() {
    let out = c_test("misuse", Link::Static, &[]);
    assert!(
        out.lines().filter(|l| l.starts_with("ok ")).count() > 40,
        "{out}"
    );
}

#[test]
fn callbacks_and_cancel_stop_training_at_once() {
    let shape = env_or(&["PLORA_C_CANCEL_ARGS"], "");
    let args: Vec<&str> = shape.split_whitespace().collect();
    let out = c_test("cancel", Link::Static, &args);
    assert!(out.contains("ok - cancel from a second thread"), "{out}");
}

/// A copy of the bundled model with a ChatML template, for chat records and prompts.
fn chat_model(dir: &Path) -> PathBuf {
    let f = GgufFile::open(asset("aidreams260K-q8_0.gguf")).unwrap();
    let mut w = GgufWriter::copy_of(&f).unwrap();
    w.set(
        "tokenizer.chat_template",
        Value::String(
            "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}".into(),
        ),
    );
    let p = dir.join("aidreams-chatml.gguf");
    w.write_file(&p).unwrap();
    p
}

#[test]
fn the_rest_of_the_api_works_from_c() {
    let dir = work_dir("api-model");
    let chat = chat_model(&dir);
    let out = c_test("api", Link::Static, &[chat.to_str().unwrap()]);
    assert!(
        out.contains("equals 6 straight steps, bit for bit"),
        "{out}"
    );
    std::fs::remove_dir_all(&dir).ok();
}
