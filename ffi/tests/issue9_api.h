/* The declarations issue 9 fixed for the C ABI, copied verbatim from the issue ("later
 * checks call them"). Not compiled: layout_tests.rs checks that include/pocketlora.h holds
 * every one of them (comments and spacing aside; enums and structs may go on past these
 * members). Never edit this file to make that test pass. */
typedef enum plora_status { PLORA_OK = 0, PLORA_ERR_INVALID_ARGUMENT = 1, PLORA_ERR_IO = 2,
    PLORA_ERR_FORMAT = 3, PLORA_ERR_UNSUPPORTED = 4, PLORA_ERR_BUDGET = 5, PLORA_ERR_CANCELLED = 6,
    PLORA_ERR_NUMERIC = 7, PLORA_ERR_STATE = 8, PLORA_ERR_PANIC = 9 } plora_status;
typedef struct plora_model plora_model;
typedef struct plora_trainer plora_trainer;
typedef struct plora_train_config { uint32_t struct_size; /* then every train option */ } plora_train_config;
typedef struct plora_progress { uint32_t step; uint32_t total_steps; float loss; float tokens_per_s;
    uint64_t heap_bytes; } plora_progress;
typedef int32_t (*plora_progress_fn)(const plora_progress *p, void *user_data); /* non-zero: stop */
typedef int32_t (*plora_token_fn)(const char *piece, int32_t token, void *user_data); /* non-zero: stop */
uint32_t plora_abi_version(void);
const char *plora_version(void);
const char *plora_last_error(void);                       /* thread-local; valid until the next call on this thread */
plora_status plora_model_open(const char *gguf_path, int32_t threads, uint64_t budget_bytes, plora_model **out);
void plora_model_free(plora_model *model);                /* NULL is a no-op */
void plora_train_config_default(plora_train_config *cfg); /* sets struct_size and every default */
plora_status plora_trainer_new(plora_model *model, const plora_train_config *cfg, plora_trainer **out);
plora_status plora_trainer_add_text(plora_trainer *t, const char *text);
plora_status plora_trainer_add_jsonl(plora_trainer *t, const char *path);
plora_status plora_trainer_run(plora_trainer *t, uint32_t steps, plora_progress_fn cb, void *user_data);
void plora_trainer_cancel(plora_trainer *t);              /* any thread */
plora_status plora_trainer_save_adapter(const plora_trainer *t, const char *dir);
void plora_trainer_free(plora_trainer *t);
plora_status plora_generate(plora_model *model, const char *adapter_dir /* NULL: none */, const char *prompt,
    uint32_t max_tokens, float temperature, uint64_t seed, plora_token_fn cb, void *user_data);
