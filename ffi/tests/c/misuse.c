/* misuse.c — everything a caller can get wrong gives an error code and a message, never a
 * crash: NULLs everywhere, wrong struct sizes, out-of-range settings, calls in the wrong
 * order, freed, foreign and wrong-type handles, re-entrant calls from a callback, bad ids
 * and too-small buffers.
 *
 *   misuse MODEL.gguf SCRATCH_DIR
 */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "pocketlora.h"

static char path_buf[4096];
static const char *scratch(const char *dir, const char *name) {
    snprintf(path_buf, sizeof path_buf, "%s/%s", dir, name);
    return path_buf;
}

/* Progress callback that tries calls on its own trainer (they must say "busy"). */
struct reentry {
    plora_trainer *t;
    plora_status info, add, run, cancel_seen;
};
static int32_t reentrant_progress(const plora_progress *p, void *user_data) {
    struct reentry *r = user_data;
    plora_trainer_info info;
    info.struct_size = sizeof info;
    (void)p;
    r->info = plora_trainer_get_info(r->t, &info);
    r->add = plora_trainer_add_text(r->t, "more text");
    r->run = plora_trainer_run(r->t, 1, NULL, NULL);
    return 0;
}

static int tokens_seen = 0;
static int32_t stop_after_three(const char *piece, int32_t token, void *user_data) {
    (void)piece;
    (void)token;
    (void)user_data;
    return ++tokens_seen >= 3;
}

int main(int argc, char **argv) {
    if (argc < 3) {
        fprintf(stderr, "usage: misuse MODEL.gguf SCRATCH_DIR\n");
        return 2;
    }
    const char *model_path = argv[1];
    const char *dir = argv[2];
    plora_model *m = NULL;
    plora_trainer *t = NULL;
    plora_adapter *a = NULL;

    /* --- the library --- */
    EXPECT_TRUE(plora_abi_version() == PLORA_ABI_VERSION);
    EXPECT_TRUE(plora_version() != NULL && plora_version()[0] != '\0');
    EXPECT_TRUE(strcmp(plora_status_name((plora_status)99), "PLORA_UNKNOWN") == 0);
    EXPECT_TRUE(strcmp(plora_status_name((plora_status)-1), "PLORA_UNKNOWN") == 0);
    EXPECT_TRUE(strcmp(plora_status_name(PLORA_ERR_STATE), "PLORA_ERR_STATE") == 0);
    plora_heap_stats(NULL, NULL);
    uint64_t heap_now = 0, heap_peak = 0;
    plora_heap_stats(&heap_now, &heap_peak);
    EXPECT_TRUE(heap_peak >= heap_now);

    /* --- opening models --- */
    EXPECT(plora_model_open(NULL, 0, 0, &m), PLORA_ERR_INVALID_ARGUMENT);
    EXPECT(plora_model_open(model_path, 0, 0, NULL), PLORA_ERR_INVALID_ARGUMENT);
    m = (plora_model *)&m; /* out is reset to NULL on failure */
    EXPECT(plora_model_open(model_path, -1, 0, &m), PLORA_ERR_INVALID_ARGUMENT);
    EXPECT_TRUE(m == NULL);
    EXPECT(plora_model_open("", 0, 0, &m), PLORA_ERR_INVALID_ARGUMENT);
    EXPECT(plora_model_open(scratch(dir, "does-not-exist.gguf"), 0, 0, &m), PLORA_ERR_IO);
    write_file(scratch(dir, "junk.gguf"), "this is not a GGUF file, just some text long enough");
    EXPECT(plora_model_open(scratch(dir, "junk.gguf"), 0, 0, &m), PLORA_ERR_FORMAT);
    EXPECT(plora_model_open(model_path, 1, 64 * 1024, &m), PLORA_ERR_BUDGET);
    EXPECT_TRUE(strstr(plora_last_error(), "smallest") != NULL);

    /* The last error, copied into a small buffer: cut, NUL-terminated, full length returned. */
    size_t full = plora_last_error_copy(NULL, 0);
    char small[8];
    memset(small, 'x', sizeof small);
    EXPECT_TRUE(full == strlen(plora_last_error()) && full > 8);
    EXPECT_TRUE(plora_last_error_copy(small, sizeof small) == full && small[7] == '\0' &&
                strncmp(small, plora_last_error(), 7) == 0);

    EXPECT_OK(plora_model_open(model_path, 2, 0, &m));

    /* --- model queries --- */
    plora_model_info mi;
    mi.struct_size = sizeof mi;
    EXPECT(plora_model_get_info(NULL, &mi), PLORA_ERR_INVALID_ARGUMENT);
    EXPECT(plora_model_get_info(m, NULL), PLORA_ERR_INVALID_ARGUMENT);
    mi.struct_size = sizeof mi - 8;
    EXPECT(plora_model_get_info(m, &mi), PLORA_ERR_INVALID_ARGUMENT);
    mi.struct_size = 0;
    EXPECT(plora_model_get_info(m, &mi), PLORA_ERR_INVALID_ARGUMENT);
    mi.struct_size = sizeof mi;
    EXPECT_OK(plora_model_get_info(m, &mi));
    EXPECT_TRUE(mi.n_vocab > 0 && mi.has_tokenizer && mi.struct_size == sizeof mi);

    int32_t ids[64];
    size_t n = 0;
    EXPECT(plora_tokenize(NULL, "hi", 1, 0, ids, 64, &n), PLORA_ERR_INVALID_ARGUMENT);
    EXPECT(plora_tokenize(m, NULL, 1, 0, ids, 64, &n), PLORA_ERR_INVALID_ARGUMENT);
    EXPECT(plora_tokenize(m, "hi", 1, 0, ids, 64, NULL), PLORA_ERR_INVALID_ARGUMENT);
    EXPECT(plora_tokenize(m, "bad \xff\xfe utf-8", 1, 0, ids, 64, &n), PLORA_ERR_INVALID_ARGUMENT);
    EXPECT(plora_tokenize(m, "Echoes of vectors", 1, 0, NULL, 0, &n), PLORA_ERR_BUFFER_TOO_SMALL);
    EXPECT_TRUE(n > 2);
    size_t need = n;
    EXPECT(plora_tokenize(m, "Echoes of vectors", 1, 0, ids, need - 1, &n), PLORA_ERR_BUFFER_TOO_SMALL);
    EXPECT(plora_tokenize(m, "Echoes of vectors", 1, 0, NULL, need, &n), PLORA_ERR_INVALID_ARGUMENT);
    EXPECT_OK(plora_tokenize(m, "Echoes of vectors", 1, 0, ids, need, &n));
    EXPECT_TRUE(n == need);

    char text[64];
    size_t len = 0;
    EXPECT(plora_detokenize(NULL, ids, n, text, sizeof text, &len), PLORA_ERR_INVALID_ARGUMENT);
    EXPECT(plora_detokenize(m, NULL, n, text, sizeof text, &len), PLORA_ERR_INVALID_ARGUMENT);
    EXPECT(plora_detokenize(m, ids, n, text, sizeof text, NULL), PLORA_ERR_INVALID_ARGUMENT);
    int32_t bad_ids[2] = {1, -5};
    EXPECT(plora_detokenize(m, bad_ids, 2, text, sizeof text, &len), PLORA_ERR_INVALID_ARGUMENT);
    bad_ids[1] = 1 << 30;
    EXPECT(plora_detokenize(m, bad_ids, 2, text, sizeof text, &len), PLORA_ERR_INVALID_ARGUMENT);
    EXPECT(plora_detokenize(m, ids, n, text, 4, &len), PLORA_ERR_BUFFER_TOO_SMALL);
    EXPECT_TRUE(len == strlen("Echoes of vectors"));
    EXPECT(plora_detokenize(m, ids, n, NULL, 64, &len), PLORA_ERR_INVALID_ARGUMENT);
    EXPECT_OK(plora_detokenize(m, ids, n, text, sizeof text, &len));
    EXPECT_TRUE(strcmp(text, "Echoes of vectors") == 0);

    /* --- training configuration --- */
    plora_train_config_default(NULL); /* no crash */
    plora_train_config cfg;
    plora_train_config_default(&cfg);
    EXPECT_TRUE(cfg.struct_size == sizeof cfg && cfg.rank == 8 && cfg.targets == PLORA_TARGET_ALL);
    EXPECT(plora_trainer_new(NULL, &cfg, &t), PLORA_ERR_INVALID_ARGUMENT);
    EXPECT(plora_trainer_new(m, NULL, &t), PLORA_ERR_INVALID_ARGUMENT);
    EXPECT(plora_trainer_new(m, &cfg, NULL), PLORA_ERR_INVALID_ARGUMENT);
#define BAD_CFG(field, value, want)                                     \
    do {                                                                \
        plora_train_config c_;                                          \
        plora_train_config_default(&c_);                                \
        c_.field = value;                                               \
        t = (plora_trainer *)&c_;                                       \
        expect_status(plora_trainer_new(m, &c_, &t), want,              \
                      "plora_trainer_new with " #field " = " #value, __LINE__); \
        EXPECT_TRUE(t == NULL);                                         \
    } while (0)
    BAD_CFG(struct_size, 0, PLORA_ERR_INVALID_ARGUMENT);
    BAD_CFG(struct_size, sizeof(plora_train_config) - 8, PLORA_ERR_INVALID_ARGUMENT);
    BAD_CFG(struct_size, sizeof(plora_train_config) + 8, PLORA_ERR_INVALID_ARGUMENT);
    BAD_CFG(struct_size, 0xffffffffu, PLORA_ERR_INVALID_ARGUMENT);
    BAD_CFG(rank, 0, PLORA_ERR_INVALID_ARGUMENT);
    BAD_CFG(rank, 100000, PLORA_ERR_INVALID_ARGUMENT);
    BAD_CFG(alpha, NAN, PLORA_ERR_INVALID_ARGUMENT);
    BAD_CFG(dropout, 1.0f, PLORA_ERR_INVALID_ARGUMENT);
    BAD_CFG(targets, 0, PLORA_ERR_INVALID_ARGUMENT);
    BAD_CFG(targets, 0x80, PLORA_ERR_INVALID_ARGUMENT);
    BAD_CFG(layers, "sideways", PLORA_ERR_INVALID_ARGUMENT);
    BAD_CFG(layers, "7,8,9", PLORA_ERR_INVALID_ARGUMENT);
    BAD_CFG(init, 5, PLORA_ERR_INVALID_ARGUMENT);
    BAD_CFG(init_adapter, "/nonexistent/adapter", PLORA_ERR_IO);
    BAD_CFG(lr, NAN, PLORA_ERR_INVALID_ARGUMENT);
    BAD_CFG(lr, -1.0f, PLORA_ERR_INVALID_ARGUMENT);
    BAD_CFG(schedule, 7, PLORA_ERR_INVALID_ARGUMENT);
    BAD_CFG(clip, INFINITY, PLORA_ERR_INVALID_ARGUMENT);
    BAD_CFG(batch, 0, PLORA_ERR_INVALID_ARGUMENT);
    BAD_CFG(grad_accum, 0, PLORA_ERR_INVALID_ARGUMENT);
    BAD_CFG(epochs, 0, PLORA_ERR_INVALID_ARGUMENT);
    BAD_CFG(seq_len, 1, PLORA_ERR_INVALID_ARGUMENT);
    BAD_CFG(valid_split, 1.0f, PLORA_ERR_INVALID_ARGUMENT);
    BAD_CFG(valid_split, -0.5f, PLORA_ERR_INVALID_ARGUMENT);
    BAD_CFG(saved_activations, 9, PLORA_ERR_INVALID_ARGUMENT);
    BAD_CFG(checkpoint_dir, "", PLORA_ERR_INVALID_ARGUMENT);

    /* --- calls in the wrong order --- */
    cfg.steps = 4;
    cfg.batch = 2;
    EXPECT_OK(plora_trainer_new(m, &cfg, &t));
    EXPECT(plora_trainer_run(t, 0, NULL, NULL), PLORA_ERR_STATE);
    plora_memory_plan plan;
    plan.struct_size = sizeof plan;
    EXPECT(plora_trainer_plan(t, &plan), PLORA_ERR_STATE);
    EXPECT(plora_trainer_save_adapter(t, scratch(dir, "adapter")), PLORA_ERR_STATE);
    EXPECT(plora_trainer_adapter(t, &a), PLORA_ERR_STATE);
    EXPECT(plora_trainer_checkpoint(t), PLORA_ERR_INVALID_ARGUMENT); /* no checkpoint_dir */
    EXPECT(plora_trainer_resume(t, NULL), PLORA_ERR_INVALID_ARGUMENT);
    /* --- bad records --- */
    EXPECT(plora_trainer_add_text(NULL, "x"), PLORA_ERR_INVALID_ARGUMENT);
    EXPECT(plora_trainer_add_text(t, NULL), PLORA_ERR_INVALID_ARGUMENT);
    EXPECT(plora_trainer_add_text(t, ""), PLORA_ERR_INVALID_ARGUMENT);
    EXPECT(plora_trainer_add_text(t, "\xc3\x28"), PLORA_ERR_INVALID_ARGUMENT);
    EXPECT(plora_trainer_add_prompt_completion(t, "q", NULL), PLORA_ERR_INVALID_ARGUMENT);
    EXPECT(plora_trainer_add_prompt_completion(t, "q", ""), PLORA_ERR_INVALID_ARGUMENT);
    EXPECT(plora_trainer_add_ids(t, NULL, NULL, 3), PLORA_ERR_INVALID_ARGUMENT);
    EXPECT(plora_trainer_add_ids(t, ids, NULL, 0), PLORA_ERR_INVALID_ARGUMENT);
    EXPECT(plora_trainer_add_ids(t, bad_ids, NULL, 2), PLORA_ERR_INVALID_ARGUMENT);
    plora_message msgs[2] = {{PLORA_ROLE_USER, "hi"}, {PLORA_ROLE_ASSISTANT, "hello"}};
    EXPECT(plora_trainer_add_chat(t, NULL, 2), PLORA_ERR_INVALID_ARGUMENT);
    EXPECT(plora_trainer_add_chat(t, msgs, 0), PLORA_ERR_INVALID_ARGUMENT);
    EXPECT(plora_trainer_add_chat(t, msgs, 2), PLORA_ERR_UNSUPPORTED); /* no chat template */
    msgs[1].role = 17;
    EXPECT(plora_trainer_add_chat(t, msgs, 2), PLORA_ERR_INVALID_ARGUMENT);
    msgs[1].role = PLORA_ROLE_ASSISTANT;
    msgs[1].content = NULL;
    EXPECT(plora_trainer_add_chat(t, msgs, 2), PLORA_ERR_INVALID_ARGUMENT);
    EXPECT(plora_trainer_add_jsonl(t, NULL), PLORA_ERR_INVALID_ARGUMENT);
    EXPECT(plora_trainer_add_jsonl(t, scratch(dir, "missing.jsonl")), PLORA_ERR_IO);
    write_file(scratch(dir, "bad.jsonl"), "{\"text\": \"fine\"}\n{\"text\": 5}\n");
    EXPECT(plora_trainer_add_jsonl(t, scratch(dir, "bad.jsonl")), PLORA_ERR_FORMAT);
    EXPECT_TRUE(strstr(plora_last_error(), "bad.jsonl:2") != NULL);
    EXPECT(plora_trainer_add_valid_jsonl(t, scratch(dir, "bad.jsonl")), PLORA_ERR_FORMAT);
    /* Not UTF-8: a format error naming the line and the byte offset, not an I/O error. */
    write_file(scratch(dir, "latin1.jsonl"), "{\"text\": \"ok\"}\n{\"text\": \"caf\xe9\"}\n");
    EXPECT(plora_trainer_add_jsonl(t, scratch(dir, "latin1.jsonl")), PLORA_ERR_FORMAT);
    EXPECT_TRUE(strstr(plora_last_error(), "latin1.jsonl:2") != NULL);
    EXPECT_TRUE(strstr(plora_last_error(), "byte offset 28") != NULL);

    /* --- then the right order --- */
    EXPECT_OK(plora_trainer_add_text(t, "The spare key is under the blue flower pot."));
    EXPECT_OK(plora_trainer_add_text(t, "Our wifi password is orange tiger seven."));
    plan.struct_size = 12;
    EXPECT(plora_trainer_plan(t, &plan), PLORA_ERR_INVALID_ARGUMENT);
    plan.struct_size = sizeof plan;
    EXPECT_OK(plora_trainer_plan(t, &plan));
    EXPECT(plora_trainer_run(NULL, 1, NULL, NULL), PLORA_ERR_INVALID_ARGUMENT);
    struct reentry re = {t, PLORA_OK, PLORA_OK, PLORA_OK, PLORA_OK};
    EXPECT_OK(plora_trainer_run(t, 1, reentrant_progress, &re));
    EXPECT_TRUE(re.info == PLORA_ERR_STATE && re.add == PLORA_ERR_STATE && re.run == PLORA_ERR_STATE);
    EXPECT(plora_trainer_add_text(t, "too late"), PLORA_ERR_STATE);
    EXPECT(plora_trainer_add_ids(t, ids, NULL, n), PLORA_ERR_STATE);
    EXPECT(plora_trainer_add_jsonl(t, scratch(dir, "bad.jsonl")), PLORA_ERR_STATE);
    EXPECT(plora_trainer_resume(t, NULL), PLORA_ERR_STATE);
    EXPECT(plora_trainer_save_adapter(t, NULL), PLORA_ERR_INVALID_ARGUMENT);
    EXPECT(plora_trainer_save_adapter(t, ""), PLORA_ERR_INVALID_ARGUMENT);
    EXPECT(plora_trainer_adapter(t, NULL), PLORA_ERR_INVALID_ARGUMENT);
    plora_trainer_info ti;
    ti.struct_size = 4;
    EXPECT(plora_trainer_get_info(t, &ti), PLORA_ERR_INVALID_ARGUMENT);
    ti.struct_size = sizeof ti;
    EXPECT(plora_trainer_get_info(t, NULL), PLORA_ERR_INVALID_ARGUMENT);
    EXPECT_OK(plora_trainer_get_info(t, &ti));
    EXPECT_TRUE(ti.steps_done == 1 && ti.total_steps == 4 && ti.started == 1);
    EXPECT_OK(plora_trainer_run(t, 0, NULL, NULL));
    EXPECT_OK(plora_trainer_run(t, 0, NULL, NULL)); /* nothing left: done */
    EXPECT_OK(plora_trainer_get_info(t, &ti));
    EXPECT_TRUE(ti.steps_done == 4 && ti.finished == 1);

    /* --- wrong-type, foreign, freed handles --- */
    EXPECT(plora_trainer_run((plora_trainer *)m, 1, NULL, NULL), PLORA_ERR_INVALID_ARGUMENT);
    EXPECT_TRUE(strstr(plora_last_error(), "plora_model handle, not a plora_trainer") != NULL);
    EXPECT(plora_model_get_info((plora_model *)t, &mi), PLORA_ERR_INVALID_ARGUMENT);
    int on_stack = 0;
    EXPECT(plora_trainer_run((plora_trainer *)&on_stack, 1, NULL, NULL), PLORA_ERR_INVALID_ARGUMENT);
    EXPECT(plora_adapter_save((plora_adapter *)&on_stack, dir), PLORA_ERR_INVALID_ARGUMENT);
    plora_trainer *stale = t;
    plora_trainer_free(t);
    t = NULL;
    EXPECT(plora_trainer_run(stale, 1, NULL, NULL), PLORA_ERR_INVALID_ARGUMENT);
    EXPECT_TRUE(strstr(plora_last_error(), "freed") != NULL);
    EXPECT(plora_trainer_add_text(stale, "x"), PLORA_ERR_INVALID_ARGUMENT);
    EXPECT(plora_trainer_get_info(stale, &ti), PLORA_ERR_INVALID_ARGUMENT);
    plora_trainer_cancel(stale);       /* no crash */
    plora_trainer_free(stale);         /* freed twice: no crash, an error message */
    EXPECT_TRUE(plora_last_error()[0] != '\0');
    plora_trainer_free(NULL);          /* no-op */
    EXPECT_TRUE(plora_last_error()[0] == '\0');
    plora_model_free(NULL);
    plora_adapter_free(NULL);
    plora_trainer_cancel(NULL);

    /* A trainer outlives the model handle it was made from. */
    plora_model *m2 = NULL;
    EXPECT_OK(plora_model_open(model_path, 1, 0, &m2));
    plora_trainer *t2 = NULL;
    EXPECT_OK(plora_trainer_new(m2, &cfg, &t2));
    EXPECT_OK(plora_trainer_add_text(t2, "Grandma Rosa makes lemon cake every Sunday."));
    plora_model_free(m2);
    EXPECT(plora_model_get_info(m2, &mi), PLORA_ERR_INVALID_ARGUMENT);
    EXPECT_OK(plora_trainer_run(t2, 2, NULL, NULL));
    EXPECT_OK(plora_trainer_adapter(t2, &a));
    plora_trainer_free(t2);
    EXPECT_OK(plora_adapter_save(a, scratch(dir, "orphan-adapter")));

    /* --- generation --- */
    EXPECT(plora_generate(NULL, NULL, "Our", 4, 0.0f, 0, NULL, NULL), PLORA_ERR_INVALID_ARGUMENT);
    EXPECT(plora_generate(m, NULL, NULL, 4, 0.0f, 0, NULL, NULL), PLORA_ERR_INVALID_ARGUMENT);
    EXPECT(plora_generate(m, NULL, "Our", 4, NAN, 0, NULL, NULL), PLORA_ERR_INVALID_ARGUMENT);
    EXPECT(plora_generate(m, scratch(dir, "no-adapter"), "Our", 4, 0.0f, 0, NULL, NULL), PLORA_ERR_IO);
    EXPECT(plora_generate(m, scratch(dir, "junk.gguf"), "Our", 4, 0.0f, 0, NULL, NULL), PLORA_ERR_FORMAT);
    EXPECT_OK(plora_generate(m, NULL, "Our", 4, 0.0f, 0, NULL, NULL)); /* no callback: fine */
    plora_generate_config gc;
    plora_generate_config_default(NULL);
    plora_generate_config_default(&gc);
    plora_generate_result gr;
    gr.struct_size = sizeof gr;
    gc.struct_size = 8;
    EXPECT(plora_generate_ex(m, &gc, "Our", NULL, NULL, &gr), PLORA_ERR_INVALID_ARGUMENT);
    gc.struct_size = sizeof gc;
    EXPECT(plora_generate_ex(m, NULL, "Our", NULL, NULL, &gr), PLORA_ERR_INVALID_ARGUMENT);
    gr.struct_size = 3;
    EXPECT(plora_generate_ex(m, &gc, "Our", NULL, NULL, &gr), PLORA_ERR_INVALID_ARGUMENT);
    gr.struct_size = sizeof gr;
    gc.top_p = 0.0f;
    EXPECT(plora_generate_ex(m, &gc, "Our", NULL, NULL, &gr), PLORA_ERR_INVALID_ARGUMENT);
    gc.top_p = 0.95f;
    gc.n_adapters = 2;
    EXPECT(plora_generate_ex(m, &gc, "Our", NULL, NULL, &gr), PLORA_ERR_INVALID_ARGUMENT);
    const plora_adapter *list[2] = {a, (const plora_adapter *)m};
    gc.adapters = list;
    EXPECT(plora_generate_ex(m, &gc, "Our", NULL, NULL, &gr), PLORA_ERR_INVALID_ARGUMENT);
    list[1] = a;
    float scales[2] = {1.0f, NAN};
    gc.scales = scales;
    EXPECT(plora_generate_ex(m, &gc, "Our", NULL, NULL, &gr), PLORA_ERR_INVALID_ARGUMENT);
    scales[1] = 0.5f;
    gc.chat = 1;
    EXPECT(plora_generate_ex(m, &gc, "Our", NULL, NULL, &gr), PLORA_ERR_UNSUPPORTED); /* no template */
    gc.chat = 0;
    gc.temperature = 0.0f;
    gc.max_tokens = 20;
    tokens_seen = 0;
    EXPECT(plora_generate_ex(m, &gc, "Our wifi", stop_after_three, NULL, &gr), PLORA_ERR_CANCELLED);
    EXPECT_TRUE(gr.stop_reason == PLORA_STOP_CALLBACK && gr.generated_tokens == 3 && tokens_seen == 3);
    EXPECT(plora_generate_plan(m, 0, 10, 0, &plan), PLORA_ERR_INVALID_ARGUMENT);
    EXPECT(plora_generate_plan(m, 5, 10, 0, NULL), PLORA_ERR_INVALID_ARGUMENT);

    /* --- adapters, export, merge --- */
    plora_adapter *b = NULL;
    EXPECT(plora_adapter_load(NULL, dir, &b), PLORA_ERR_INVALID_ARGUMENT);
    EXPECT(plora_adapter_load(m, NULL, &b), PLORA_ERR_INVALID_ARGUMENT);
    EXPECT(plora_adapter_load(m, scratch(dir, "orphan-adapter"), NULL), PLORA_ERR_INVALID_ARGUMENT);
    EXPECT(plora_adapter_load(m, scratch(dir, "none-here"), &b), PLORA_ERR_IO);
    EXPECT(plora_adapter_save(NULL, dir), PLORA_ERR_INVALID_ARGUMENT);
    EXPECT(plora_adapter_save(a, NULL), PLORA_ERR_INVALID_ARGUMENT);
    EXPECT(plora_adapter_export_gguf(a, scratch(dir, "a.gguf"), 7), PLORA_ERR_INVALID_ARGUMENT);
    EXPECT(plora_adapter_export_gguf(NULL, scratch(dir, "a.gguf"), 0), PLORA_ERR_INVALID_ARGUMENT);
    const plora_adapter *one[1] = {a};
    EXPECT(plora_merge(m, one, NULL, 0, scratch(dir, "merged.gguf"), 0, NULL), PLORA_ERR_INVALID_ARGUMENT);
    EXPECT(plora_merge(m, NULL, NULL, 1, scratch(dir, "merged.gguf"), 0, NULL), PLORA_ERR_INVALID_ARGUMENT);
    EXPECT(plora_merge(m, one, NULL, 1, scratch(dir, "merged.gguf"), 99, NULL), PLORA_ERR_INVALID_ARGUMENT);
    EXPECT(plora_merge(m, one, NULL, 1, NULL, 0, NULL), PLORA_ERR_INVALID_ARGUMENT);
    plora_adapter *stale_a = a;
    plora_adapter_free(a);
    EXPECT(plora_adapter_export_gguf(stale_a, scratch(dir, "a.gguf"), 0), PLORA_ERR_INVALID_ARGUMENT);

    plora_model_free(m);
    EXPECT(plora_generate(m, NULL, "Our", 4, 0.0f, 0, NULL, NULL), PLORA_ERR_INVALID_ARGUMENT);
    return check_summary();
}
