//! The header's structs and constants against this library's: every struct's fields (read
//! from the header) are the Rust struct's, in order, at the same offsets and with the same
//! size as a C compiler lays them out, and every constant has the number the code uses.
//! (The symbol check and the C programs are in tests/c_programs.rs.)

use std::collections::BTreeMap;
use std::mem::{offset_of, size_of};
use std::path::PathBuf;
use std::process::Command;

use crate::generate::{GenerateConfig, GenerateResult};
use crate::model::ModelInfo;
use crate::plan::{MemoryPlan, PlanItem, MAX_ITEMS};
use crate::status::Status;
use crate::trainer::{MessageC, Progress, TrainConfigC, TrainerInfo};

macro_rules! layout {
    ($out:ident, $c:literal, $t:ty, [$($f:ident),* $(,)?]) => {
        $out.push(($c, size_of::<$t>(), vec![$((stringify!($f), offset_of!($t, $f))),*]));
    };
}

type Layout = (&'static str, usize, Vec<(&'static str, usize)>);

fn rust_layouts() -> Vec<Layout> {
    let mut v: Vec<Layout> = Vec::new();
    layout!(
        v,
        "plora_train_config",
        TrainConfigC,
        [
            struct_size,
            rank,
            alpha,
            rslora,
            dropout,
            targets,
            layers,
            init,
            init_adapter,
            lr,
            schedule,
            warmup,
            clip,
            weight_decay,
            steps,
            epochs,
            batch,
            grad_accum,
            seq_len,
            shuffle,
            seed,
            mask_prompt,
            skip_bad_lines,
            valid_split,
            eval_every,
            patience,
            checkpoint_dir,
            save_every,
            saved_activations,
            flags
        ]
    );
    layout!(
        v,
        "plora_progress",
        Progress,
        [
            step,
            total_steps,
            loss,
            tokens_per_s,
            heap_bytes,
            lr,
            grad_norm,
            valid_loss,
            epoch
        ]
    );
    layout!(v, "plora_message", MessageC, [role, content]);
    layout!(
        v,
        "plora_model_info",
        ModelInfo,
        [
            struct_size,
            n_vocab,
            n_ctx,
            n_embd,
            n_layer,
            n_head,
            n_head_kv,
            n_ff,
            threads,
            bos,
            eos,
            has_tokenizer,
            has_chat_template,
            budget_bytes,
            file_bytes,
            n_params,
            architecture
        ]
    );
    layout!(
        v,
        "plora_trainer_info",
        TrainerInfo,
        [
            struct_size,
            started,
            steps_done,
            total_steps,
            finished,
            reserved,
            n_records,
            n_valid_records,
            target_tokens,
            n_params,
            last_loss,
            best_valid_loss
        ]
    );
    layout!(v, "plora_plan_item", PlanItem, [name, bytes]);
    layout!(
        v,
        "plora_memory_plan",
        MemoryPlan,
        [
            struct_size,
            threads,
            budget_bytes,
            total_bytes,
            seq_len,
            chunk,
            saved_activations,
            segment,
            loss_rows,
            n_items,
            items
        ]
    );
    layout!(
        v,
        "plora_generate_config",
        GenerateConfig,
        [
            struct_size,
            max_tokens,
            temperature,
            top_k,
            top_p,
            min_p,
            seed,
            chat,
            parse_special,
            adapters,
            scales,
            n_adapters,
            reserved
        ]
    );
    layout!(
        v,
        "plora_generate_result",
        GenerateResult,
        [
            struct_size,
            prompt_tokens,
            generated_tokens,
            stop_reason,
            tokens_per_s,
            reserved
        ]
    );
    v
}

/// Constants of the header and the values the code gives them meaning by.
fn constants() -> Vec<(String, i64)> {
    let mut c: Vec<(String, i64)> = Status::ALL
        .iter()
        .map(|(s, n)| (n.to_string(), *s as i64))
        .collect();
    // Every target, one bit at its index.
    for t in pocketlora_core::Target::EVERY {
        let name = t.short().to_ascii_uppercase();
        c.push((format!("PLORA_TARGET_{name}"), 1 << t.index()));
    }
    let fixed: &[(&str, i64)] = &[
        ("PLORA_TARGET_ALL", 0x7f),
        ("PLORA_INIT_KAIMING", 0),
        ("PLORA_INIT_GAUSSIAN", 1),
        ("PLORA_SCHEDULE_COSINE", 0),
        ("PLORA_SCHEDULE_LINEAR", 1),
        ("PLORA_SCHEDULE_CONSTANT", 2),
        ("PLORA_SAVED_AUTO", 0),
        ("PLORA_SAVED_F32", 1),
        ("PLORA_SAVED_BF16", 2),
        ("PLORA_SAVED_F16", 3),
        ("PLORA_TRAIN_OVERWRITE", 1),
        ("PLORA_TRAIN_ALLOW_DATA_CHANGE", 2),
        ("PLORA_TRAIN_ALLOW_LONG_CONTEXT", 4),
        ("PLORA_ROLE_SYSTEM", 0),
        ("PLORA_ROLE_USER", 1),
        ("PLORA_ROLE_ASSISTANT", 2),
        ("PLORA_DTYPE_F32", 0),
        ("PLORA_DTYPE_F16", 1),
        ("PLORA_TYPE_SAME", 0),
        ("PLORA_TYPE_F32", 1),
        ("PLORA_TYPE_F16", 2),
        ("PLORA_TYPE_BF16", 3),
        ("PLORA_TYPE_Q8_0", 4),
        ("PLORA_TYPE_Q4_0", 5),
        ("PLORA_TYPE_Q4_K", 6),
        ("PLORA_TYPE_Q6_K", 7),
        ("PLORA_STOP_LENGTH", 0),
        ("PLORA_STOP_EOG", 1),
        ("PLORA_STOP_CONTEXT", 2),
        ("PLORA_STOP_CALLBACK", 3),
        ("PLORA_PLAN_MAX_ITEMS", MAX_ITEMS as i64),
        ("PLORA_ABI_VERSION", crate::ABI_VERSION as i64),
    ];
    c.extend(fixed.iter().map(|(n, v)| (n.to_string(), *v)));
    c
}

fn header() -> String {
    without_comments(&read("include/pocketlora.h"))
}

/// A file of this crate.
fn read(rel: &str) -> String {
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(rel);
    std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

/// C source without its comments.
fn without_comments(h: &str) -> String {
    let mut code = String::new();
    let mut rest = h;
    while let Some(i) = rest.find("/*") {
        code.push_str(&rest[..i]);
        rest = &rest[i + 2..];
        rest = rest.find("*/").map_or("", |j| &rest[j + 2..]);
    }
    code + rest
}

/// C code as tokens (identifiers and numbers whole, every other character alone), so that
/// spacing does not matter.
fn tokens(code: &str) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    let mut word = String::new();
    for c in code.chars() {
        if c.is_alphanumeric() || c == '_' {
            word.push(c);
            continue;
        }
        if !word.is_empty() {
            out.push(std::mem::take(&mut word));
        }
        if !c.is_whitespace() {
            out.push(c.to_string());
        }
    }
    if !word.is_empty() {
        out.push(word);
    }
    out
}

/// The top-level declarations of C code without comments (split at `;` outside braces), as
/// tokens; preprocessor lines, and the C++-only lines between `#ifdef __cplusplus` and
/// `#endif`, left out.
fn declarations(code: &str) -> Vec<Vec<String>> {
    let mut c_only = String::new();
    let mut in_cplusplus = false;
    for line in code.lines() {
        let l = line.trim_start();
        if l.starts_with("#ifdef __cplusplus") {
            in_cplusplus = true;
        } else if l.starts_with("#endif") {
            in_cplusplus = false;
        } else if !in_cplusplus && !l.starts_with('#') {
            c_only += line;
            c_only.push('\n');
        }
    }
    let mut out = Vec::new();
    let mut cur = Vec::new();
    let mut depth = 0;
    for t in tokens(&c_only) {
        match t.as_str() {
            "{" => depth += 1,
            "}" => depth -= 1,
            ";" if depth == 0 => {
                out.push(std::mem::take(&mut cur));
                continue;
            }
            _ => {}
        }
        cur.push(t);
    }
    out
}

/// The members of a `typedef enum|struct NAME { ... } NAME` declaration (split at `,` or
/// `;`), or `None` for any other declaration.
fn members(decl: &[String]) -> Option<Vec<Vec<String>>> {
    let open = decl.iter().position(|t| t == "{")?;
    let close = decl.iter().rposition(|t| t == "}")?;
    let sep = if decl[1] == "enum" { "," } else { ";" };
    let mut out: Vec<Vec<String>> = decl[open + 1..close]
        .split(|t| t == sep)
        .map(<[String]>::to_vec)
        .collect();
    if out.last().is_some_and(Vec::is_empty) {
        out.pop();
    }
    Some(out)
}

/// Every declaration issue 9 fixed (tests/issue9_api.h, copied from the issue) stands in the
/// header: functions, handles and callback types token for token; the result codes and
/// structs with the issue's members first, in order (the header may append members).
#[test]
fn the_issue_declarations_stand_in_the_header() {
    let header = declarations(&header());
    let fixed = declarations(&without_comments(&read("tests/issue9_api.h")));
    assert_eq!(fixed.len(), 21, "the declarations of the issue");
    for want in &fixed {
        let text = want.join(" ");
        match members(want) {
            None => assert!(
                header.contains(want),
                "the header does not declare, as issue 9 fixed it: {text}"
            ),
            Some(want_members) => {
                // typedef enum|struct NAME { ... } NAME: the same head and tail.
                let head = &want[..want.iter().position(|t| t == "{").unwrap()];
                let tail = &want[want.iter().rposition(|t| t == "}").unwrap()..];
                let got = header
                    .iter()
                    .find(|d| d.starts_with(head) && d.ends_with(tail) && d.len() > head.len())
                    .unwrap_or_else(|| panic!("the header has no {}", head.join(" ")));
                let got_members = members(got).unwrap();
                assert!(
                    got_members.len() >= want_members.len()
                        && got_members[..want_members.len()] == want_members[..],
                    "{} does not begin with the members issue 9 fixed:\n  issue:  {:?}\n  header: {:?}",
                    head.join(" "),
                    want_members,
                    got_members
                );
            }
        }
    }
}

/// Each `typedef struct NAME { ... } NAME;` of the header with its field names in order.
fn header_structs(code: &str) -> BTreeMap<String, Vec<String>> {
    let mut out = BTreeMap::new();
    let mut rest = code;
    while let Some(i) = rest.find("typedef struct ") {
        rest = &rest[i + "typedef struct ".len()..];
        let name: String = rest
            .chars()
            .take_while(|c| c.is_alphanumeric() || *c == '_')
            .collect();
        let after = rest[name.len()..].trim_start();
        if !after.starts_with('{') {
            continue; // an opaque type
        }
        let body = &after[1..after.find('}').unwrap()];
        let fields = body
            .split(';')
            .map(str::trim)
            .filter(|d| !d.is_empty())
            .map(|d| {
                let d = d.split('[').next().unwrap().trim_end();
                d.rsplit(|c: char| !(c.is_alphanumeric() || c == '_'))
                    .next()
                    .unwrap()
                    .to_string()
            })
            .collect();
        out.insert(name, fields);
    }
    out
}

fn env_or(names: &[&str], default: &str) -> String {
    names
        .iter()
        .find_map(|n| std::env::var(n).ok().filter(|v| !v.trim().is_empty()))
        .unwrap_or_else(|| default.to_string())
}

#[test]
fn header_structs_and_constants_match_the_library() {
    let layouts = rust_layouts();
    let structs = header_structs(&header());
    // Field lists: the header's, in order, are the Rust structs'.
    let rust_names: Vec<&str> = layouts.iter().map(|l| l.0).collect();
    assert_eq!(
        structs.keys().map(String::as_str).collect::<Vec<_>>(),
        {
            let mut v = rust_names.clone();
            v.sort();
            v
        },
        "every struct of the header has a Rust twin here"
    );
    for (name, _, fields) in &layouts {
        let want: Vec<&str> = fields.iter().map(|f| f.0).collect();
        assert_eq!(structs[*name], want, "fields of {name}");
    }
    // Offsets and sizes as the C compiler sees them.
    let mut c = String::from(
        "#include <stddef.h>\n#include <stdio.h>\n#include \"pocketlora.h\"\nint main(void) {\n",
    );
    for (name, _, fields) in &layouts {
        c += &format!("    printf(\"{name} sizeof %zu\\n\", sizeof({name}));\n");
        for (f, _) in fields {
            c += &format!("    printf(\"{name} {f} %zu\\n\", offsetof({name}, {f}));\n");
        }
    }
    for (k, _) in constants() {
        c += &format!("    printf(\"{k} %lld\\n\", (long long)({k}));\n");
    }
    c += "    return 0;\n}\n";
    let dir = std::env::temp_dir().join(format!("plora-layout-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let src = dir.join("layout.c");
    let exe = dir.join("layout");
    std::fs::write(&src, c).unwrap();
    let cc = env_or(&["PLORA_CC", "CC"], "cc");
    let o = Command::new(&cc)
        .args(["-std=c11", "-Wall", "-Wextra", "-Werror", "-pedantic", "-I"])
        .arg(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("include"))
        .arg(&src)
        .arg("-o")
        .arg(&exe)
        .output()
        .unwrap_or_else(|e| panic!("{cc}: {e}"));
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let runner = env_or(&["PLORA_C_RUNNER"], "");
    let mut parts = runner.split_whitespace();
    let mut cmd = match parts.next() {
        Some(first) => {
            let mut c = Command::new(first);
            c.args(parts).arg(&exe);
            c
        }
        None => Command::new(&exe),
    };
    let o = cmd.output().unwrap();
    assert!(o.status.success());
    let printed: BTreeMap<String, i64> = String::from_utf8_lossy(&o.stdout)
        .lines()
        .filter_map(|l| {
            let (k, v) = l.rsplit_once(' ')?;
            Some((k.to_string(), v.parse().ok()?))
        })
        .collect();
    for (name, size, fields) in &layouts {
        assert_eq!(
            printed[&format!("{name} sizeof")],
            *size as i64,
            "sizeof {name}"
        );
        for (f, off) in fields {
            assert_eq!(
                printed[&format!("{name} {f}")],
                *off as i64,
                "offsetof({name}, {f})"
            );
        }
    }
    for (k, v) in constants() {
        assert_eq!(printed[&k], v, "{k}");
    }
    std::fs::remove_dir_all(&dir).ok();
}
