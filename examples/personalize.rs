//! Personalization through the library's front, start to finish: open a GGUF model, read
//! personal notes (any supported data format), plan the run inside a memory budget, train a
//! LoRA adapter, compare the loss before and after, save the adapter in PEFT format.
//!
//! ```text
//! cargo run --release --example personalize -- [MODEL.gguf] [DATA.jsonl] [OUT_DIR]
//! ```
//!
//! Without arguments it uses the bundled aidreams260K model and the demo's six facts.

use std::path::PathBuf;
use std::sync::Arc;

use pocketlora::{
    evaluate_with, peft, AdapterInit, ChatTemplate, Dtype, EncodeOptions, Event, Length,
    LoadOptions, LoraConfig, Model, Resume, Schedule, Session, Tokenizer, TrainSpec,
};

fn main() -> pocketlora::Result<()> {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let mut args = std::env::args().skip(1).map(PathBuf::from);
    let model_path = args
        .next()
        .unwrap_or_else(|| root.join("assets/aidreams260K-q8_0.gguf"));
    let data = args
        .next()
        .unwrap_or_else(|| root.join("assets/demo/facts.jsonl"));
    let out = args
        .next()
        .unwrap_or_else(|| std::env::temp_dir().join("pocketlora-personalize"));

    let name = model_path
        .file_name()
        .map_or_else(String::new, |n| n.to_string_lossy().into_owned());
    let model = Arc::new(Model::open(&model_path, 0)?);
    let file = model.weights.file().clone();
    let tok = Tokenizer::from_gguf(&file)?;
    let chat = ChatTemplate::from_gguf(&file).ok();

    let spec = TrainSpec {
        adapter: AdapterInit::New(LoraConfig {
            r: 16,
            alpha: 32.0,
            ..LoraConfig::default()
        }),
        lr: 5e-3,
        schedule: Schedule::Constant,
        length: Length::Steps(60),
        batch: 6,
        budget: Some(128 << 20),
        out: Some(out.clone()),
        base_name: name.clone(),
        ..TrainSpec::default()
    };
    let mut session = Session::new(model.clone(), spec)?;
    let opts = LoadOptions {
        encode: EncodeOptions::default(),
        skip_bad_lines: false,
    };
    session.load_file(&data, Some(&tok), chat.as_ref(), opts, false)?;
    if let Some(plan) = session.plan()? {
        println!("memory plan:\n{}", plan.to_text());
    }

    let mut started = session.start(Resume::No)?;
    let (records, _) = started.run.records();
    let records = records.to_vec();
    let before = evaluate_with(&model, None, &records)?.loss;
    let summary = started.run.run(|ev| {
        if let Event::Step { stats, .. } = ev {
            if stats.step % 10 == 0 {
                println!("step {:>3}  loss {:.4}", stats.step, stats.loss);
            }
        }
        true
    })?;
    let adapter = started.run.result_adapter();
    let after = evaluate_with(&model, Some(adapter), &records)?.loss;
    println!(
        "loss on the notes {before:.3} → {after:.3} after {} steps ({:.1} s)",
        summary.steps, summary.seconds
    );

    // The run wrote the adapter into `out`; a copy as 16-bit floats, as an app might ship it.
    let small = out.join("f16");
    peft::save(adapter, &model.cfg, &small, &name, Dtype::F16)?;
    println!(
        "adapter in {} (PEFT format; f16 copy in {})",
        out.display(),
        small.display()
    );
    Ok(())
}
