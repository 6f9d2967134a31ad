#![no_main]

use libfuzzer_sys::fuzz_target;
use pocketlora::internals::fuzzing;

fuzz_target!(|data: &[u8]| fuzzing::chat(data, fuzzing::repo_tokenizers()));
