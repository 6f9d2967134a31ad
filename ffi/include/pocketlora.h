/*
 * pocketlora.h — the C ABI of pocketlora: LoRA fine-tuning and generation on the device,
 * on a frozen, quantized GGUF base model.
 *
 * Link with libpocketlora.a (static; on Linux/Android also -lpthread -ldl -lm) or
 * libpocketlora.so. Written by hand; ffi/tests checks that every function declared here is
 * exported by the library and nothing else is, that every struct has the same layout as
 * the library's, and compiles C programs against it with -Wall -Wextra -Werror.
 *
 * CONVENTIONS (they hold for every function unless its comment says otherwise)
 *
 * Results. Functions that can fail return a plora_status: PLORA_OK (0) or an error code.
 * The numbers are stable: codes are never renumbered or reused, only appended. On an error,
 * plora_last_error() describes it in one line (UTF-8). Out-pointers (a handle, a count) are
 * set on success; handle out-pointers are set to NULL on failure.
 *
 * Never crashes on bad arguments it can detect: NULL handles and strings, freed or foreign
 * handles, a handle of the wrong type, a wrong struct_size, calls in the wrong order, text
 * that is not UTF-8 — all give an error code. Every function runs inside a panic boundary:
 * an internal bug gives PLORA_ERR_PANIC, never an abort. What cannot be detected: a
 * non-NULL pointer to memory that is not what the signature says (a wild pointer, a buffer
 * shorter than its stated capacity).
 *
 * Handles (plora_model, plora_trainer, plora_adapter) are opaque, created by a _open/_new/
 * _load function and released by the matching _free. Each handle is registered with its
 * type in a table of live handles and carries a tag; every call looks the pointer up and
 * checks the tag before using it, and _free removes it and clears the tag. So a freed handle
 * passed again gives PLORA_ERR_INVALID_ARGUMENT, and the freed memory is never read. This
 * is best effort: if the allocator later places a new handle of the same type at the same
 * address, the stale pointer names that new handle. Handles keep what they depend on
 * alive: a trainer or adapter may outlive the model handle it was made from (the model's
 * memory is released with the last of them).
 *
 * Strings passed in are NUL-terminated UTF-8 (file paths: any bytes, as the OS takes them)
 * and are copied if kept: the caller owns them and may free them when the call returns.
 * Strings returned as `const char *` are owned by the library; each function says how long
 * they stay valid. Buffers are filled in the caller's memory: a function that writes into
 * a buffer takes its capacity, and when it is too small returns
 * PLORA_ERR_BUFFER_TOO_SMALL, writes nothing, and reports the size needed.
 *
 * Structs the caller passes in or gets filled (plora_train_config, plora_generate_config,
 * plora_model_info, ...) start with `uint32_t struct_size`, which the caller sets to
 * sizeof(the struct) — the _default() functions do it. Later versions of this header only
 * append fields, and the library checks struct_size against the sizes it knows: a struct
 * from another version of the header it does not know gives PLORA_ERR_INVALID_ARGUMENT
 * instead of being misread. Structs the library passes to callbacks (plora_progress) are
 * read-only and may grow at the end.
 *
 * Threads. The library starts its own worker threads (per model; see plora_model_open) and
 * runs the callers' long calls on them; callbacks are always called on the thread that made
 * the call, never on a worker. A model handle may be used from several threads at once
 * (generation, tokenization, trainers and adapters made from it). A trainer runs one call
 * at a time: a call on a trainer that is busy on another thread — or made from inside that
 * trainer's own progress callback — returns PLORA_ERR_STATE instead of waiting; only
 * plora_trainer_cancel() and plora_trainer_free() may be called at any time from any
 * thread. Adapter handles are immutable and may be shared between threads.
 *
 * Callbacks must return normally: no C++ exceptions, no longjmp across the library.
 *
 * Memory. The library's own allocations go through a counting allocator (its Rust heap,
 * not the app's malloc), reported by plora_heap_stats() and in plora_progress. A model
 * opened with a budget plans every training run and generation to stay inside it (see
 * plora_model_open); the memory-mapped model file is file-backed and not part of it.
 */
#ifndef POCKETLORA_H
#define POCKETLORA_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* The version of this ABI: plora_abi_version() returns it; bumped only by changes that
 * break old callers (none are planned: the ABI grows by appending). */
#define PLORA_ABI_VERSION 1

/* ---------------------------------------------------------------------------------------
 * Result codes
 * ------------------------------------------------------------------------------------- */

typedef enum plora_status {
    PLORA_OK = 0,
    PLORA_ERR_INVALID_ARGUMENT = 1, /* NULL, out of range, not a live handle, bad struct_size, not UTF-8 */
    PLORA_ERR_IO = 2,               /* a file could not be opened, read or written */
    PLORA_ERR_FORMAT = 3,           /* a model, adapter, checkpoint or data file is malformed */
    PLORA_ERR_UNSUPPORTED = 4,      /* a valid file this build cannot use (architecture, tensor type, tokenizer) */
    PLORA_ERR_BUDGET = 5,           /* the memory budget cannot be met; the message names the smallest that would */
    PLORA_ERR_CANCELLED = 6,        /* stopped by plora_trainer_cancel() or by a callback returning non-zero */
    PLORA_ERR_NUMERIC = 7,          /* training diverged (loss not finite); the step was not applied */
    PLORA_ERR_STATE = 8,            /* a call in the wrong order, or on a trainer busy in another call */
    PLORA_ERR_PANIC = 9,            /* an internal error (a bug): please report plora_last_error() */
    PLORA_ERR_BUFFER_TOO_SMALL = 10 /* a caller buffer is too small; the size needed was reported */
} plora_status;

/* ---------------------------------------------------------------------------------------
 * Constants for configuration fields (the fields themselves are uint32_t)
 * ------------------------------------------------------------------------------------- */

/* plora_train_config.targets: which linear layers of each block get an adapter.
 * PLORA_TARGET_ALL (exactly these seven bits) means every linear layer the architecture has
 * (phi3: qkv, o, gate_up, down; lfm2 adds its convolution blocks' in/out projections).
 * Other masks name layers one by one; a layer the architecture does not have is refused
 * (phi3 fuses q, k and v into QKV, and gate and up into GATE_UP). */
enum {
    PLORA_TARGET_Q = 1u << 0,
    PLORA_TARGET_K = 1u << 1,
    PLORA_TARGET_V = 1u << 2,
    PLORA_TARGET_O = 1u << 3,
    PLORA_TARGET_GATE = 1u << 4,
    PLORA_TARGET_UP = 1u << 5,
    PLORA_TARGET_DOWN = 1u << 6,
    PLORA_TARGET_ALL = 0x7fu,
    PLORA_TARGET_QKV = 1u << 7,      /* phi3's fused attn_qkv */
    PLORA_TARGET_GATE_UP = 1u << 8,  /* phi3's fused gate/up (ffn_up) */
    PLORA_TARGET_CONV_IN = 1u << 9,  /* lfm2 convolution blocks' in_proj */
    PLORA_TARGET_CONV_OUT = 1u << 10 /* lfm2 convolution blocks' out_proj */
};

/* plora_train_config.init: how A starts (B starts at zero). */
enum { PLORA_INIT_KAIMING = 0, PLORA_INIT_GAUSSIAN = 1 };

/* plora_train_config.schedule: learning rate after the linear warmup. */
enum { PLORA_SCHEDULE_COSINE = 0, PLORA_SCHEDULE_LINEAR = 1, PLORA_SCHEDULE_CONSTANT = 2 };

/* plora_train_config.saved_activations: storage of the activations kept for the backward
 * pass. AUTO: f32 (exact) unless the budget needs bf16. BF16/F16 are lossy. */
enum {
    PLORA_SAVED_AUTO = 0,
    PLORA_SAVED_F32 = 1,
    PLORA_SAVED_BF16 = 2,
    PLORA_SAVED_F16 = 3
};

/* plora_train_config.flags: what a run may do to what it finds (bits, or'ed). */
enum {
    PLORA_TRAIN_OVERWRITE = 1,          /* replace a non-empty checkpoint_dir (at the end of the
                                           run, recoverably); without it such a directory is
                                           refused before the first step */
    PLORA_TRAIN_ALLOW_DATA_CHANGE = 2,  /* resume although the records differ from the
                                           checkpointed run's (by content hash) */
    PLORA_TRAIN_ALLOW_LONG_CONTEXT = 4  /* allow a seq_len above the model's trained context */
};

/* plora_message.role */
enum { PLORA_ROLE_SYSTEM = 0, PLORA_ROLE_USER = 1, PLORA_ROLE_ASSISTANT = 2 };

/* plora_adapter_export_gguf(): tensor type of the written adapter. */
enum { PLORA_DTYPE_F32 = 0, PLORA_DTYPE_F16 = 1 };

/* plora_merge(): encoding of the merged tensors. SAME keeps each tensor's own type. */
enum {
    PLORA_TYPE_SAME = 0,
    PLORA_TYPE_F32 = 1,
    PLORA_TYPE_F16 = 2,
    PLORA_TYPE_BF16 = 3,
    PLORA_TYPE_Q8_0 = 4,
    PLORA_TYPE_Q4_0 = 5,
    PLORA_TYPE_Q4_K = 6,
    PLORA_TYPE_Q6_K = 7
};

/* plora_generate_result.stop_reason */
enum {
    PLORA_STOP_LENGTH = 0,   /* max_tokens were generated */
    PLORA_STOP_EOG = 1,      /* an end-of-generation token (EOS, end of turn) was generated */
    PLORA_STOP_CONTEXT = 2,  /* the model's context (or the budget's KV cache limit) is full */
    PLORA_STOP_CALLBACK = 3  /* the token callback returned non-zero */
};

/* plora_memory_plan.items holds at most this many entries. */
#define PLORA_PLAN_MAX_ITEMS 16

/* ---------------------------------------------------------------------------------------
 * Types
 * ------------------------------------------------------------------------------------- */

/* A loaded base model (memory-mapped GGUF file, its tokenizer, worker threads, budget). */
typedef struct plora_model plora_model;
/* A training run: its LoRA adapter, optimizer state, data and checkpoints. */
typedef struct plora_trainer plora_trainer;
/* A LoRA adapter loaded from a file or taken from a trainer (immutable). */
typedef struct plora_adapter plora_adapter;

/* Every training option. Fill with plora_train_config_default(), then change fields. */
typedef struct plora_train_config {
    uint32_t struct_size;        /* sizeof(plora_train_config) */
    /* The adapter */
    uint32_t rank;               /* LoRA rank r (8); 1..4096 */
    float alpha;                 /* LoRA alpha (16): scale alpha/r, or alpha/sqrt(r) with rslora */
    int32_t rslora;              /* non-zero: rank-stabilised scale alpha/sqrt(r) (0) */
    float dropout;               /* dropout on the LoRA input path, [0, 1) (0) */
    uint32_t targets;            /* PLORA_TARGET_* bits (PLORA_TARGET_ALL) */
    const char *layers;          /* blocks: NULL or "all", "last:N", or a list "0,3,5" (NULL) */
    uint32_t init;               /* PLORA_INIT_* (PLORA_INIT_KAIMING, as PEFT) */
    const char *init_adapter;    /* NULL, or a PEFT directory or llama.cpp GGUF adapter to continue
                                    training from; its rank, alpha, targets and blocks are used and
                                    the fields above are ignored (NULL) */
    /* The optimizer (AdamW, torch semantics) */
    float lr;                    /* peak learning rate (2e-4) */
    uint32_t schedule;           /* PLORA_SCHEDULE_* (PLORA_SCHEDULE_COSINE) */
    uint32_t warmup;             /* linear warmup steps (0) */
    float clip;                  /* clip the global gradient norm to this; 0 = off (1.0) */
    float weight_decay;          /* decoupled weight decay (0) */
    /* The loop */
    uint32_t steps;              /* optimizer steps of the run; 0 = `epochs` passes over the
                                    training records (0) */
    uint32_t epochs;             /* passes over the records when steps is 0 (1) */
    uint32_t batch;              /* records per micro-batch (4) */
    uint32_t grad_accum;         /* micro-batches per optimizer step (1) */
    uint32_t seq_len;            /* truncate records to this many tokens; 0 = the model's
                                    context length (0) */
    int32_t shuffle;             /* non-zero: reshuffle the records every epoch (0) */
    uint64_t seed;               /* initialisation, shuffling, validation split, dropout (0) */
    int32_t mask_prompt;         /* non-zero: prompt tokens of prompt/completion records are
                                    not trained on (1) */
    int32_t skip_bad_lines;      /* non-zero: plora_trainer_add_jsonl() skips malformed lines
                                    instead of failing (0) */
    /* Validation */
    float valid_split;           /* hold out this fraction of the training records (seeded) for
                                    validation; 0 = none, or use plora_trainer_add_valid_jsonl() (0) */
    uint32_t eval_every;         /* validate every N steps; 0 = ten times per run (0) */
    uint32_t patience;           /* stop after N validations without improvement and keep the
                                    best adapter; 0 = never stop early (0) */
    /* Checkpoints */
    const char *checkpoint_dir;  /* NULL, or a directory for checkpoints (written atomically to
                                    checkpoint_dir/checkpoints/step-N, newest two kept) (NULL) */
    uint32_t save_every;         /* also checkpoint every N steps; 0 = only when
                                    plora_trainer_run() returns (0) */
    /* Memory */
    uint32_t saved_activations;  /* PLORA_SAVED_* (PLORA_SAVED_AUTO) */
    /* Safety */
    uint32_t flags;              /* PLORA_TRAIN_* bits (0) */
} plora_train_config;

/* What a training step did; passed to the progress callback (read-only, valid during the
 * callback only; may grow at the end in later versions). */
typedef struct plora_progress {
    uint32_t step;          /* optimizer steps done, counting from the start of the run (1-based) */
    uint32_t total_steps;   /* steps the run was configured for */
    float loss;             /* mean cross-entropy over the step's target tokens */
    float tokens_per_s;     /* tokens run through the model per second in this call */
    uint64_t heap_bytes;    /* the library's heap in use now */
    /* appended in ABI 1 beyond the five fields above */
    float lr;               /* learning rate of the step */
    float grad_norm;        /* global gradient norm before clipping */
    float valid_loss;       /* latest validation loss; NaN until one ran */
    uint32_t epoch;         /* completed passes over the training records */
} plora_progress;

/* Progress callback of plora_trainer_run(): called after every optimizer step, on the thread
 * that called plora_trainer_run(). Return 0 to go on, non-zero to stop after this step. */
typedef int32_t (*plora_progress_fn)(const plora_progress *p, void *user_data); /* non-zero: stop */

/* Token callback of generation: called for every generated token, on the calling thread,
 * with its text and id. `piece` is NUL-terminated UTF-8, valid during the callback only; it
 * may be "" when the token ends inside a multi-byte character (its bytes come with the next
 * piece). Last, if text is still held back, the callback gets it once with token -1.
 * Return 0 to go on, non-zero to stop. */
typedef int32_t (*plora_token_fn)(const char *piece, int32_t token, void *user_data); /* non-zero: stop */

/* One chat message for plora_trainer_add_chat(). */
typedef struct plora_message {
    uint32_t role;          /* PLORA_ROLE_* */
    const char *content;    /* NUL-terminated UTF-8 */
} plora_message;

/* A description of a model (plora_model_get_info()). */
typedef struct plora_model_info {
    uint32_t struct_size;      /* set by the caller: sizeof(plora_model_info) */
    uint32_t n_vocab;
    uint32_t n_ctx;            /* training context length */
    uint32_t n_embd;
    uint32_t n_layer;
    uint32_t n_head;
    uint32_t n_head_kv;
    uint32_t n_ff;
    uint32_t threads;          /* worker threads */
    int32_t bos;               /* BOS token id, -1 if none */
    int32_t eos;               /* EOS token id, -1 if none */
    int32_t has_tokenizer;     /* text functions need it; token-id functions do not */
    int32_t has_chat_template; /* chat records and chat prompts need it */
    uint64_t budget_bytes;     /* 0: none */
    uint64_t file_bytes;       /* size of the GGUF file (memory-mapped, not in the budget) */
    uint64_t n_params;         /* parameters of the base model */
    char architecture[16];     /* "llama", "qwen2" (NUL-terminated) */
} plora_model_info;

/* The state of a trainer (plora_trainer_get_info()). */
typedef struct plora_trainer_info {
    uint32_t struct_size;      /* set by the caller: sizeof(plora_trainer_info) */
    uint32_t started;          /* 1 once plora_trainer_run() or plora_trainer_resume() ran:
                                  the data is then fixed */
    uint32_t steps_done;       /* optimizer steps done */
    uint32_t total_steps;      /* steps of the run (known once started; 0 before) */
    uint32_t finished;         /* 1 when every step is done or validation stopped the run early */
    uint32_t reserved;         /* 0 */
    uint64_t n_records;        /* training records (after the validation split, once started) */
    uint64_t n_valid_records;  /* validation records */
    uint64_t target_tokens;    /* trained-on tokens over all training records */
    uint64_t n_params;         /* trainable adapter values */
    float last_loss;           /* loss of the last step; NaN before the first */
    float best_valid_loss;     /* NaN without validation */
} plora_trainer_info;

/* One row of a memory plan. */
typedef struct plora_plan_item {
    char name[48];             /* e.g. "AdamW moments" (NUL-terminated) */
    uint64_t bytes;
} plora_plan_item;

/* A memory plan: what a training run or a generation will hold and how it was shaped to
 * fit the budget (plora_trainer_plan(), plora_generate_plan()). */
typedef struct plora_memory_plan {
    uint32_t struct_size;      /* set by the caller: sizeof(plora_memory_plan) */
    uint32_t threads;          /* worker threads the plan uses (fewer than the model's when
                                  their per-thread buffers did not fit) */
    uint64_t budget_bytes;     /* 0: no budget (the plan is then the unconstrained one) */
    uint64_t total_bytes;      /* sum of the items */
    uint32_t seq_len;          /* training: longest sequence; generation: KV cache positions */
    uint32_t chunk;            /* training: token chunk of the recomputed projections;
                                  generation: prompt tokens per forward call */
    uint32_t saved_activations;/* training: PLORA_SAVED_F32/BF16/F16 chosen; generation: 0 */
    uint32_t segment;          /* training: blocks per checkpoint segment (1: every block's input
                                  kept; k: every k-th kept, the others recomputed in backward);
                                  generation: 0 */
    uint32_t loss_rows;        /* training: target rows whose logits exist at once in the fused
                                  output head + loss (fewer: less memory); generation: 0 */
    uint32_t n_items;
    plora_plan_item items[PLORA_PLAN_MAX_ITEMS];
} plora_memory_plan;

/* Generation settings. Fill with plora_generate_config_default(), then change fields. */
typedef struct plora_generate_config {
    uint32_t struct_size;      /* sizeof(plora_generate_config) */
    uint32_t max_tokens;       /* new tokens at most (128) */
    float temperature;         /* 0 = greedy (0.8) */
    uint32_t top_k;            /* keep the K most likely tokens; 0 = off (40) */
    float top_p;               /* nucleus threshold in (0, 1]; 1 = off (0.95) */
    float min_p;               /* drop tokens below this fraction of the best's probability (0.05) */
    uint64_t seed;             /* sampling seed (0) */
    int32_t chat;              /* non-zero: the prompt is one user message, rendered with the
                                  model's chat template with the assistant's turn opened (0) */
    int32_t parse_special;     /* non-zero: control tokens written in the prompt ("<s>",
                                  "<|im_start|>") become those tokens (0; chat prompts always) */
    const plora_adapter *const *adapters; /* NULL, or n_adapters adapters applied together */
    const float *scales;       /* NULL (each 1.0), or n_adapters weights: sum of w_i * adapter_i */
    uint32_t n_adapters;       /* (0) */
    uint32_t reserved;         /* 0 */
} plora_generate_config;

/* What a generation did (plora_generate_ex()). */
typedef struct plora_generate_result {
    uint32_t struct_size;      /* set by the caller: sizeof(plora_generate_result) */
    uint32_t prompt_tokens;
    uint32_t generated_tokens;
    uint32_t stop_reason;      /* PLORA_STOP_* */
    float tokens_per_s;        /* generated tokens per second (prompt reading included) */
    uint32_t reserved;         /* 0 */
} plora_generate_result;

/* ---------------------------------------------------------------------------------------
 * Library
 * ------------------------------------------------------------------------------------- */

/* PLORA_ABI_VERSION of the library; compare it with the header's at start-up.
 * Thread: any. */
uint32_t plora_abi_version(void);

/* The library's version, e.g. "0.1.0". Static string: never free it. Thread: any. */
const char *plora_version(void);

/* The message of the last failed call on this thread ("" after a call that succeeded).
 * Owned by the library: valid until the next plora_ call on this thread (other than
 * plora_last_error, plora_last_error_copy, plora_status_name, plora_version and
 * plora_abi_version) or until the thread ends. Never NULL. Thread: any (per thread). */
const char *plora_last_error(void);                       /* thread-local; valid until the next call on this thread */

/* Copies the last error of this thread into buf (capacity `size` bytes, NUL-terminated,
 * cut at a character boundary if it does not fit; nothing is written when size is 0 or buf
 * is NULL). Returns the full message's length in bytes, without the NUL. Thread: any. */
size_t plora_last_error_copy(char *buf, size_t size);

/* The name of a status code ("PLORA_ERR_BUDGET"), "PLORA_UNKNOWN" for other numbers.
 * Static string. Thread: any. */
const char *plora_status_name(plora_status status);

/* The library's heap: bytes in use now and the most at once since the process started.
 * Either pointer may be NULL. Thread: any. */
void plora_heap_stats(uint64_t *current_bytes, uint64_t *peak_bytes);

/* ---------------------------------------------------------------------------------------
 * Models
 * ------------------------------------------------------------------------------------- */

/* Opens a GGUF model (memory-mapped; validated before use) with its tokenizer and starts
 * `threads` worker threads (0: one per core). budget_bytes (0: none) bounds the library's
 * memory for every training run and generation on this model: each is planned to fit before
 * it starts (shorter token chunks, bf16 activations, fewer threads, a shorter KV cache) or
 * refused with PLORA_ERR_BUDGET naming the smallest budget that would do; opening fails
 * with PLORA_ERR_BUDGET if not even a one-token generation fits. The budget applies to each
 * operation on its own: two trainers or generations running at once need both their plans.
 * *out receives the handle; free it with plora_model_free().
 * Thread: any. The worker threads sleep when idle and end when the model is released. */
plora_status plora_model_open(const char *gguf_path, int32_t threads, uint64_t budget_bytes, plora_model **out);

/* Releases the handle. Trainers and adapters made from the model keep what they need, and
 * calls running on other threads finish first; the memory goes with the last of them.
 * Thread: any. */
void plora_model_free(plora_model *model);                /* NULL is a no-op */

/* Describes the model. info->struct_size must be set. Thread: any. */
plora_status plora_model_get_info(const plora_model *model, plora_model_info *info);

/* Text -> token ids with the model's tokenizer. add_special: add BOS/EOS as the model asks;
 * parse_special: control tokens written in the text become those tokens. Writes the ids to
 * ids[0..*n_ids] if they fit in `capacity`; otherwise returns PLORA_ERR_BUFFER_TOO_SMALL
 * with *n_ids set to the count needed (ids may be NULL when capacity is 0, to ask the size).
 * PLORA_ERR_UNSUPPORTED if the model has no tokenizer. Thread: any. */
plora_status plora_tokenize(const plora_model *model, const char *text, int32_t add_special,
                            int32_t parse_special, int32_t *ids, size_t capacity, size_t *n_ids);

/* Token ids -> text (control tokens such as BOS/EOS give no text). Writes NUL-terminated
 * UTF-8 to text if length + 1 <= capacity, with *length set to its length without the NUL;
 * otherwise returns PLORA_ERR_BUFFER_TOO_SMALL with *length set to the length needed
 * (without the NUL). An id outside the vocabulary gives PLORA_ERR_INVALID_ARGUMENT.
 * Thread: any. */
plora_status plora_detokenize(const plora_model *model, const int32_t *ids, size_t n_ids,
                              char *text, size_t capacity, size_t *length);

/* ---------------------------------------------------------------------------------------
 * Training
 *
 * Order: plora_trainer_new(); add records (any mix of the plora_trainer_add_* functions);
 * optionally plora_trainer_resume(); then plora_trainer_run() as often as wanted (each
 * call continues where the last stopped); plora_trainer_save_adapter() or
 * plora_trainer_adapter() at any point after the first step; plora_trainer_free(). The
 * first plora_trainer_run() or plora_trainer_resume() fixes the data: adding records after
 * it gives PLORA_ERR_STATE, as do running without records and saving before training.
 * ------------------------------------------------------------------------------------- */

/* Sets cfg->struct_size and every field to its default (in parentheses above). cfg must
 * point to a plora_train_config of this header. Thread: any. */
void plora_train_config_default(plora_train_config *cfg); /* sets struct_size and every default */

/* A trainer for `model` with the settings in cfg (copied, strings included: cfg may be
 * freed after the call). Builds the adapter (or loads cfg->init_adapter); planning against
 * the budget happens when the run starts, once the data is known. *out receives the
 * handle; free it with plora_trainer_free(). Thread: any. */
plora_status plora_trainer_new(plora_model *model, const plora_train_config *cfg, plora_trainer **out);

/* Adds one text record: BOS (if the model uses it) + the text + EOS, every token after BOS
 * trained on. Thread: any (not while the trainer is busy). */
plora_status plora_trainer_add_text(plora_trainer *t, const char *text);

/* Adds one prompt/completion record (tokenized as one text). The completion and EOS are
 * trained on; the prompt too unless cfg->mask_prompt. Thread: any (not while busy). */
plora_status plora_trainer_add_prompt_completion(plora_trainer *t, const char *prompt, const char *completion);

/* Adds one conversation of n messages, rendered with the model's chat template; the
 * assistant's turns are trained on (at least one is needed). PLORA_ERR_UNSUPPORTED if the
 * model has no chat template. Thread: any (not while busy). */
plora_status plora_trainer_add_chat(plora_trainer *t, const plora_message *messages, size_t n);

/* Adds one record of n token ids. mask: NULL (every token after the first is trained on)
 * or n bytes, mask[i] != 0 making token i a target (mask[0] never counts). Ids must be in
 * the vocabulary. Thread: any (not while busy). */
plora_status plora_trainer_add_ids(plora_trainer *t, const int32_t *ids, const uint8_t *mask, size_t n);

/* Adds every record of a data file: JSONL with one format per file ({"text"},
 * {"prompt","completion"}, {"messages":[{"role","content"}]}, {"ids","mask"}) or a .txt
 * file split into documents at blank lines. A malformed line gives PLORA_ERR_FORMAT naming
 * file:line (or is skipped with cfg->skip_bad_lines). Thread: any (not while busy). */
plora_status plora_trainer_add_jsonl(plora_trainer *t, const char *path);

/* Adds every record of a data file (as plora_trainer_add_jsonl) to the validation set:
 * validated every cfg->eval_every steps and when plora_trainer_run() completes.
 * Thread: any (not while busy). */
plora_status plora_trainer_add_valid_jsonl(plora_trainer *t, const char *path);

/* The memory plan of the run: before the first run, for the records added so far; after,
 * the plan in use. Works without a budget too (budget_bytes is then 0 and the plan the
 * unconstrained one). plan->struct_size must be set. PLORA_ERR_BUDGET if no plan fits.
 * PLORA_ERR_STATE without records. Thread: any (not while busy). */
plora_status plora_trainer_plan(plora_trainer *t, plora_memory_plan *plan);

/* Continues from the newest complete checkpoint in cfg->checkpoint_dir: adapter, optimizer
 * state, step count and data position, so that the result is bit-identical to a run that
 * was never interrupted. Call it after adding the same records and before the first run.
 * *step (may be NULL) receives the step resumed at, 0 when there is no checkpoint (then the
 * run starts fresh). A checkpoint written with other settings or data (anything but steps
 * and epochs differs) is refused with PLORA_ERR_INVALID_ARGUMENT naming the setting.
 * PLORA_ERR_STATE after the first run; PLORA_ERR_INVALID_ARGUMENT without a checkpoint_dir.
 * Thread: any (not while busy). */
plora_status plora_trainer_resume(plora_trainer *t, uint32_t *step);

/* Trains: takes up to `steps` more optimizer steps (0: all that remain), never beyond the
 * run's total (cfg->steps, or cfg->epochs passes). The first call plans the memory (the
 * model's budget; PLORA_ERR_BUDGET if it cannot be met), fixes the data and allocates
 * everything; later calls continue exactly where the previous stopped. cb (may be NULL) is
 * called after every step with user_data, on this thread. Returns PLORA_OK when the steps
 * are done (or the run is complete, or validation stopped it early — see
 * plora_trainer_get_info), PLORA_ERR_CANCELLED when cb returned non-zero or
 * plora_trainer_cancel() was called (the trainer stays at the last completed step: nothing
 * of an interrupted step is applied, and a later call continues from there),
 * PLORA_ERR_NUMERIC when the loss stopped being finite (that step was not applied; lower
 * the learning rate). With cfg->checkpoint_dir set, a checkpoint is written every
 * cfg->save_every steps and whenever this call returns after taking steps.
 * Thread: any; blocks the calling thread while training (the work runs on the model's
 * worker threads). */
plora_status plora_trainer_run(plora_trainer *t, uint32_t steps, plora_progress_fn cb, void *user_data);

/* Asks the trainer to stop: a plora_trainer_run() in progress returns PLORA_ERR_CANCELLED
 * before its next record (within one micro-step: one record's forward and backward pass),
 * discarding the unfinished step. No request is lost: if no run is in progress, the next
 * one returns PLORA_ERR_CANCELLED at once, without taking a step (the run that sees the
 * request consumes it; call plora_trainer_run again to go on). Thread: any, at any time,
 * also from inside the progress callback; never blocks (not async-signal-safe: do not call
 * it from a signal handler). */
void plora_trainer_cancel(plora_trainer *t);              /* any thread */

/* Writes a checkpoint now (e.g. when the app goes to the background) to
 * cfg->checkpoint_dir. PLORA_ERR_STATE before the first run or resume;
 * PLORA_ERR_INVALID_ARGUMENT without a checkpoint_dir. Thread: any (not while busy). */
plora_status plora_trainer_checkpoint(plora_trainer *t);

/* Writes the adapter as a PEFT directory (adapter_model.safetensors +
 * adapter_config.json; created if missing, files written atomically) that Hugging Face
 * PEFT, plora_adapter_load() and `pocketlora --adapter` read. With early stopping
 * (cfg->patience) it is the best adapter so far, otherwise the current one.
 * PLORA_ERR_STATE before any step. Thread: any (not while busy). */
plora_status plora_trainer_save_adapter(const plora_trainer *t, const char *dir);

/* A snapshot of the trainer's adapter (as plora_trainer_save_adapter would write it) as an
 * adapter handle, e.g. to generate with between runs or to export. Free it with
 * plora_adapter_free(). PLORA_ERR_STATE before any step. Thread: any (not while busy). */
plora_status plora_trainer_adapter(const plora_trainer *t, plora_adapter **out);

/* The trainer's state. info->struct_size must be set. Thread: any (not while busy). */
plora_status plora_trainer_get_info(const plora_trainer *t, plora_trainer_info *info);

/* Releases the trainer. If a plora_trainer_run() is in progress on another thread, it is
 * cancelled and the memory is released when it returns. Thread: any. */
void plora_trainer_free(plora_trainer *t);                /* NULL is a no-op */

/* ---------------------------------------------------------------------------------------
 * Adapters
 * ------------------------------------------------------------------------------------- */

/* Loads an adapter for `model`: a PEFT directory (ours or Hugging Face PEFT's, rank/alpha
 * patterns and rsLoRA included) or a llama.cpp GGUF adapter file. An adapter whose shapes
 * do not fit the model gives PLORA_ERR_FORMAT naming the tensor. Free it with
 * plora_adapter_free(). Thread: any. */
plora_status plora_adapter_load(const plora_model *model, const char *path, plora_adapter **out);

/* Releases the adapter. Thread: any. */
void plora_adapter_free(plora_adapter *adapter);          /* NULL is a no-op */

/* Writes the adapter as a PEFT directory (see plora_trainer_save_adapter). Thread: any. */
plora_status plora_adapter_save(const plora_adapter *adapter, const char *dir);

/* Writes the adapter as a llama.cpp LoRA GGUF file (llama-cli --lora, llama_adapter_lora_init)
 * with PLORA_DTYPE_F32 or _F16 tensors. Thread: any. */
plora_status plora_adapter_export_gguf(const plora_adapter *adapter, const char *path, uint32_t dtype);

/* Merges n adapters (each times scales[i]; scales NULL: 1.0 each) into the base model and
 * writes a new GGUF model file to out_path (atomically): W = W0 + sum of scale_i * s_i * B_i * A_i
 * per adapted weight, re-encoded as out_type (PLORA_TYPE_*). Streams tensor by tensor (a few
 * MiB per thread). *max_requant_error (may be NULL) receives the largest relative RMS
 * re-quantization error of a merged tensor (0 for F32). Runs to the end (no callback).
 * Thread: any; blocks while it writes. */
plora_status plora_merge(const plora_model *model, const plora_adapter *const *adapters, const float *scales,
                         size_t n, const char *out_path, uint32_t out_type, double *max_requant_error);

/* ---------------------------------------------------------------------------------------
 * Generation
 * ------------------------------------------------------------------------------------- */

/* Continues `prompt` (text; BOS added as the model asks) with up to max_tokens new tokens,
 * calling cb (may be NULL) with each on the calling thread. adapter_dir: NULL for the base
 * model, or a PEFT directory / llama.cpp GGUF adapter loaded for this call. temperature 0
 * is greedy; otherwise llama.cpp's sampler chain (top-k 40, top-p 0.95, min-p 0.05) seeded
 * with `seed`. Stops at max_tokens, an end-of-generation token or a full context: PLORA_OK;
 * when cb returns non-zero: PLORA_ERR_CANCELLED. With a budget, planned to fit first.
 * Thread: any; several generations may run on one model at once. */
plora_status plora_generate(plora_model *model, const char *adapter_dir /* NULL: none */, const char *prompt,
    uint32_t max_tokens, float temperature, uint64_t seed, plora_token_fn cb, void *user_data);

/* Sets cfg->struct_size and every field to its default. Thread: any. */
void plora_generate_config_default(plora_generate_config *cfg);

/* plora_generate with every setting: sampling, a chat prompt, and any number of loaded
 * adapters applied together with weights (cfg->adapters, cfg->scales). result (may be NULL;
 * struct_size set) receives counts and the stop reason; it is filled also when cb stopped
 * the generation (PLORA_ERR_CANCELLED). Thread: any. */
plora_status plora_generate_ex(plora_model *model, const plora_generate_config *cfg, const char *prompt,
                               plora_token_fn cb, void *user_data, plora_generate_result *result);

/* The memory plan of a generation of max_tokens after a prompt of prompt_tokens tokens with
 * adapters of rank up to max_rank (0: none), as the model's budget would shape it.
 * plan->struct_size must be set. PLORA_ERR_BUDGET if it cannot fit. Thread: any. */
plora_status plora_generate_plan(const plora_model *model, uint32_t prompt_tokens, uint32_t max_tokens,
                                 uint32_t max_rank, plora_memory_plan *plan);

#ifdef __cplusplus
} /* extern "C" */
#endif

#endif /* POCKETLORA_H */
