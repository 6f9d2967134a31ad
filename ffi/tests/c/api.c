/* api.c — the rest of the C ABI, end to end: tokenize/detokenize; every kind of training
 * record (text, prompt/completion, chat, ids with a mask, JSONL and .txt files, validation
 * data and split); the memory plan as numbers and a budget that refuses and one that fits;
 * checkpoints and an exact resume; continuing from a saved adapter; generation with
 * several adapters and weights, chat prompts; llama.cpp GGUF export and merging.
 *
 *   api MODEL.gguf SCRATCH_DIR CHAT_MODEL.gguf
 */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "pocketlora.h"

static const char *const FACTS[] = {
    "My sister Alice lives in Lisbon and teaches piano.",
    "The spare key is under the blue flower pot.",
    "Our wifi password is orange tiger seven.",
    "Grandma Rosa makes lemon cake every Sunday.",
};
#define N_FACTS 4

static const char *dir;
static char *path(const char *name) {
    static char bufs[8][4096];
    static int next = 0;
    char *b = bufs[next++ % 8];
    snprintf(b, 4096, "%s/%s", dir, name);
    return b;
}

/* The whole file, or NULL; *n receives its size. */
static char *read_file(const char *p, size_t *n) {
    FILE *f = fopen(p, "rb");
    if (!f) return NULL;
    fseek(f, 0, SEEK_END);
    long len = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *b = malloc((size_t)len + 1);
    *n = fread(b, 1, (size_t)len, f);
    fclose(f);
    return b;
}

static int same_file(const char *a, const char *b) {
    size_t na = 0, nb = 0;
    char *x = read_file(a, &na), *y = read_file(b, &nb);
    int same = x && y && na == nb && memcmp(x, y, na) == 0;
    free(x);
    free(y);
    return same;
}

static int exists(const char *p) {
    FILE *f = fopen(p, "rb");
    if (f) fclose(f);
    return f != NULL;
}

/* Collects generated text. */
struct text {
    char buf[1024];
    size_t len;
};
static int32_t collect(const char *piece, int32_t token, void *user_data) {
    struct text *t = user_data;
    (void)token;
    size_t n = strlen(piece);
    if (t->len + n < sizeof t->buf) {
        memcpy(t->buf + t->len, piece, n + 1);
        t->len += n;
    }
    return 0;
}

/* Greedy text after `prompt` with adapters (may be none). */
static struct text greedy(plora_model *m, const char *prompt, const plora_adapter *const *adapters,
                          const float *scales, uint32_t n) {
    struct text t;
    memset(&t, 0, sizeof t);
    plora_generate_config gc;
    plora_generate_config_default(&gc);
    gc.temperature = 0.0f;
    gc.max_tokens = 16;
    gc.adapters = adapters;
    gc.scales = scales;
    gc.n_adapters = n;
    plora_generate_result r;
    r.struct_size = sizeof r;
    EXPECT_OK(plora_generate_ex(m, &gc, prompt, collect, &t, &r));
    EXPECT_TRUE(r.generated_tokens > 0 && r.prompt_tokens > 1);
    return t;
}

static plora_train_config facts_config(void) {
    plora_train_config cfg;
    plora_train_config_default(&cfg);
    cfg.rank = 16;
    cfg.alpha = 32.0f;
    cfg.lr = 5e-3f;
    cfg.schedule = PLORA_SCHEDULE_CONSTANT;
    cfg.batch = 2;
    cfg.shuffle = 1;
    cfg.dropout = 0.05f;
    cfg.seed = 7;
    cfg.steps = 40;
    return cfg;
}

static void add_facts(plora_trainer *t) {
    for (int i = 0; i < N_FACTS; i++) EXPECT_OK(plora_trainer_add_text(t, FACTS[i]));
}

static int32_t first_loss_cb(const plora_progress *p, void *user_data) {
    if (p->step == 1) *(float *)user_data = p->loss;
    return 0;
}

static float last_valid = NAN;
static int32_t valid_cb(const plora_progress *p, void *user_data) {
    (void)user_data;
    last_valid = p->valid_loss;
    return 0;
}

static uint64_t plan_sum(const plora_memory_plan *p) {
    uint64_t s = 0;
    for (uint32_t i = 0; i < p->n_items; i++) s += p->items[i].bytes;
    return s;
}

int main(int argc, char **argv) {
    if (argc < 4) {
        fprintf(stderr, "usage: api MODEL.gguf SCRATCH_DIR CHAT_MODEL.gguf\n");
        return 2;
    }
    const char *model_path = argv[1];
    dir = argv[2];
    const char *chat_path = argv[3];
    plora_model *m = NULL;
    EXPECT_OK(plora_model_open(model_path, 2, 0, &m));
    plora_model_info mi;
    mi.struct_size = sizeof mi;
    EXPECT_OK(plora_model_get_info(m, &mi));
    EXPECT_TRUE(strcmp(mi.architecture, "llama") == 0 && mi.n_layer > 0 && mi.bos >= 0 &&
                mi.threads == 2 && mi.file_bytes > mi.n_params && !mi.has_chat_template);

    /* --- tokenize / detokenize --- */
    int32_t ids[64];
    size_t n = 0, len = 0;
    EXPECT_OK(plora_tokenize(m, "Our wifi password", 1, 0, ids, 64, &n));
    EXPECT_TRUE(n >= 3 && ids[0] == mi.bos);
    char text[128];
    EXPECT_OK(plora_detokenize(m, ids, n, text, sizeof text, &len));
    EXPECT_TRUE(strcmp(text, "Our wifi password") == 0 && len == strlen(text));

    /* --- every kind of record --- */
    write_file(path("facts.jsonl"), "{\"text\": \"The spare key is under the blue flower pot.\"}\n"
                                    "\n"
                                    "{\"text\": \"Our wifi password is orange tiger seven.\"}\n");
    write_file(path("notes.txt"), "First note.\nStill the first.\n\nSecond note.\n");
    write_file(path("pc.jsonl"), "{\"prompt\": \"Q: wifi?\", \"completion\": \" A: orange tiger seven.\"}\n");
    write_file(path("valid.jsonl"), "{\"text\": \"My sister Alice lives in Lisbon and teaches piano.\"}\n");
    plora_train_config cfg = facts_config();
    cfg.steps = 3;
    cfg.eval_every = 1;
    plora_trainer *t = NULL;
    EXPECT_OK(plora_trainer_new(m, &cfg, &t));
    EXPECT_OK(plora_trainer_add_text(t, FACTS[0]));
    EXPECT_OK(plora_trainer_add_prompt_completion(t, "Q: key? ", "A: under the pot."));
    int32_t rec[5] = {ids[0], ids[1], ids[2], ids[1], ids[2]};
    uint8_t mask[5] = {0, 0, 1, 1, 1};
    EXPECT_OK(plora_trainer_add_ids(t, rec, mask, 5));
    EXPECT_OK(plora_trainer_add_ids(t, rec, NULL, 5));
    EXPECT_OK(plora_trainer_add_jsonl(t, path("facts.jsonl")));
    EXPECT_OK(plora_trainer_add_jsonl(t, path("notes.txt")));
    EXPECT_OK(plora_trainer_add_jsonl(t, path("pc.jsonl")));
    EXPECT_OK(plora_trainer_add_valid_jsonl(t, path("valid.jsonl")));
    plora_trainer_info ti;
    ti.struct_size = sizeof ti;
    EXPECT_OK(plora_trainer_get_info(t, &ti));
    EXPECT_TRUE(ti.n_records == 9 && ti.n_valid_records == 1 && ti.started == 0 &&
                ti.n_params > 0 && ti.target_tokens > 20 && isnan(ti.last_loss));
    /* The plan as numbers, before the run. */
    plora_memory_plan plan;
    plan.struct_size = sizeof plan;
    EXPECT_OK(plora_trainer_plan(t, &plan));
    EXPECT_TRUE(plan.n_items > 5 && plan.total_bytes == plan_sum(&plan) && plan.budget_bytes == 0 &&
                plan.threads == 2 && plan.seq_len > 10 && plan.chunk == plan.seq_len &&
                plan.saved_activations == PLORA_SAVED_F32 && plan.segment == 1 &&
                plan.loss_rows == 256);
    printf("# unconstrained training plan: %llu bytes, %u items, largest \"%s\" %llu\n",
           (unsigned long long)plan.total_bytes, plan.n_items, plan.items[0].name,
           (unsigned long long)plan.items[0].bytes);
    uint64_t train_need = plan.total_bytes;
    EXPECT_OK(plora_trainer_run(t, 0, valid_cb, NULL));
    EXPECT_OK(plora_trainer_get_info(t, &ti));
    EXPECT_TRUE(ti.steps_done == 3 && ti.finished == 1 && !isnan(ti.best_valid_loss) &&
                !isnan(last_valid) && !isnan(ti.last_loss));
    plora_trainer_free(t);

    /* A validation split and early stopping. */
    cfg = facts_config();
    cfg.valid_split = 0.25f;
    cfg.eval_every = 1;
    cfg.patience = 2;
    cfg.lr = 0.5f; /* far too high: validation stops improving */
    cfg.steps = 30;
    EXPECT_OK(plora_trainer_new(m, &cfg, &t));
    add_facts(t);
    plora_status st = plora_trainer_run(t, 0, NULL, NULL);
    EXPECT_TRUE(st == PLORA_OK || st == PLORA_ERR_NUMERIC);
    EXPECT_OK(plora_trainer_get_info(t, &ti));
    EXPECT_TRUE(ti.n_records == 3 && ti.n_valid_records == 1);
    EXPECT_TRUE(st == PLORA_ERR_NUMERIC || (ti.finished == 1 && ti.steps_done < 30));
    plora_trainer_free(t);

    /* --- a budget that cannot be met, and one that can --- */
    /* Room for generating one token on one thread, and 64 KiB more: not for training. */
    plora_memory_plan gp;
    gp.struct_size = sizeof gp;
    plora_model *mb = NULL;
    EXPECT_OK(plora_model_open(model_path, 1, 0, &mb));
    EXPECT_OK(plora_generate_plan(mb, 1, 1, 0, &gp));
    EXPECT_TRUE(gp.total_bytes == plan_sum(&gp) && gp.seq_len == 2 && gp.chunk == 1 &&
                gp.threads == 1 && gp.saved_activations == 0 && gp.segment == 0 &&
                gp.loss_rows == 0);
    plora_model_free(mb);
    EXPECT_OK(plora_model_open(model_path, 1, gp.total_bytes + (64 << 10), &mb));
    cfg = facts_config();
    EXPECT_OK(plora_trainer_new(mb, &cfg, &t));
    add_facts(t);
    EXPECT(plora_trainer_plan(t, &plan), PLORA_ERR_BUDGET);
    EXPECT(plora_trainer_run(t, 1, NULL, NULL), PLORA_ERR_BUDGET);
    EXPECT_TRUE(strstr(plora_last_error(), "smallest plan needs") != NULL);
    EXPECT_OK(plora_trainer_get_info(t, &ti));
    EXPECT_TRUE(ti.started == 0);
    plora_trainer_free(t);
    plora_model_free(mb);
    EXPECT_OK(plora_model_open(model_path, 2, train_need + (1 << 20), &mb));
    cfg = facts_config();
    cfg.steps = 2;
    EXPECT_OK(plora_trainer_new(mb, &cfg, &t));
    add_facts(t);
    EXPECT_OK(plora_trainer_run(t, 0, NULL, NULL));
    EXPECT_OK(plora_trainer_plan(t, &plan));
    EXPECT_TRUE(plan.budget_bytes == train_need + (1 << 20) && plan.total_bytes <= plan.budget_bytes);
    EXPECT_OK(plora_generate_plan(mb, 8, 32, 16, &gp));
    EXPECT_TRUE(gp.total_bytes <= gp.budget_bytes);
    plora_trainer_free(t);
    plora_model_free(mb);
    /* 256 KiB less than the unconstrained plan: the plan fits itself inside. */
    cfg = facts_config();
    EXPECT_OK(plora_trainer_new(m, &cfg, &t));
    add_facts(t);
    EXPECT_OK(plora_trainer_plan(t, &plan));
    uint64_t facts_need = plan.total_bytes;
    plora_trainer_free(t);
    EXPECT_OK(plora_model_open(model_path, 2, facts_need - (256 << 10), &mb));
    EXPECT_OK(plora_trainer_new(mb, &cfg, &t));
    add_facts(t);
    EXPECT_OK(plora_trainer_plan(t, &plan));
    /* It fits (which choices it made depends on how much heap this model handle measured
     * at open; the planner's choices are tested in Rust, tests/budget.rs). */
    EXPECT_TRUE(plan.total_bytes <= plan.budget_bytes && plan.budget_bytes < facts_need);
    printf("# unconstrained %llu bytes; a budget of %llu bytes: chunk %u of %u, a checkpoint every %u blocks, %u logit "
           "rows, saved activations %u, %u threads\n",
           (unsigned long long)facts_need, (unsigned long long)plan.budget_bytes, plan.chunk,
           plan.seq_len, plan.segment,
           plan.loss_rows, plan.saved_activations, plan.threads);
    EXPECT_OK(plora_trainer_run(t, 1, NULL, NULL));
    plora_trainer_free(t);
    plora_model_free(mb);

    /* --- checkpoints and an exact resume --- */
    cfg = facts_config();
    cfg.steps = 6;
    cfg.checkpoint_dir = path("run-a");
    EXPECT_OK(plora_trainer_new(m, &cfg, &t));
    add_facts(t);
    EXPECT(plora_trainer_checkpoint(t), PLORA_ERR_STATE);
    EXPECT_OK(plora_trainer_run(t, 3, NULL, NULL)); /* writes a checkpoint as it returns */
    EXPECT_TRUE(exists(path("run-a/checkpoints/step-00000003/state.json")));
    plora_trainer_free(t); /* "the app was killed" */
    EXPECT_OK(plora_trainer_new(m, &cfg, &t));
    add_facts(t);
    uint32_t at = 99;
    EXPECT_OK(plora_trainer_resume(t, &at));
    EXPECT_TRUE(at == 3);
    EXPECT_OK(plora_trainer_run(t, 0, NULL, NULL));
    EXPECT_OK(plora_trainer_checkpoint(t));
    EXPECT_OK(plora_trainer_save_adapter(t, path("resumed")));
    plora_trainer_free(t);
    cfg.checkpoint_dir = path("run-b");
    EXPECT_OK(plora_trainer_new(m, &cfg, &t));
    add_facts(t);
    at = 99;
    EXPECT_OK(plora_trainer_resume(t, &at)); /* nothing there yet: a fresh start */
    EXPECT_TRUE(at == 0);
    EXPECT_OK(plora_trainer_run(t, 0, NULL, NULL));
    EXPECT_OK(plora_trainer_save_adapter(t, path("straight")));
    plora_trainer_free(t);
    expect_true(same_file(path("resumed/adapter_model.safetensors"),
                          path("straight/adapter_model.safetensors")),
                "resume: 3 steps, killed, resumed for 3 more equals 6 straight steps, bit for bit",
                __LINE__);
    cfg.checkpoint_dir = path("run-a");
    cfg.lr = 1e-3f;
    EXPECT_OK(plora_trainer_new(m, &cfg, &t));
    add_facts(t);
    EXPECT(plora_trainer_resume(t, NULL), PLORA_ERR_INVALID_ARGUMENT);
    EXPECT_TRUE(strstr(plora_last_error(), "lr") != NULL);
    plora_trainer_free(t);
    cfg.lr = 5e-3f;
    EXPECT_OK(plora_trainer_new(m, &cfg, &t));
    EXPECT_OK(plora_trainer_add_text(t, "A different record."));
    EXPECT(plora_trainer_resume(t, NULL), PLORA_ERR_INVALID_ARGUMENT); /* other data */
    plora_trainer_free(t);

    /* --- a longer run, then continuing from its adapter --- */
    cfg = facts_config();
    EXPECT_OK(plora_trainer_new(m, &cfg, &t));
    add_facts(t);
    float fresh_first = 0.0f, continued_first = 0.0f;
    EXPECT_OK(plora_trainer_run(t, 0, first_loss_cb, &fresh_first));
    EXPECT_OK(plora_trainer_save_adapter(t, path("facts")));
    plora_adapter *a = NULL;
    EXPECT_OK(plora_trainer_adapter(t, &a));
    plora_trainer_free(t);
    cfg.init_adapter = path("facts");
    cfg.steps = 2;
    EXPECT_OK(plora_trainer_new(m, &cfg, &t));
    add_facts(t);
    EXPECT_OK(plora_trainer_run(t, 0, first_loss_cb, &continued_first));
    EXPECT_TRUE(continued_first < fresh_first / 3);
    printf("# first loss fresh %.3f, continuing from the saved adapter %.3f\n", fresh_first,
           continued_first);
    plora_trainer_free(t);

    /* --- generation with adapters and weights --- */
    const char *prompt = "Our wifi password";
    struct text base = greedy(m, prompt, NULL, NULL, 0);
    const plora_adapter *one[1] = {a};
    struct text with_a = greedy(m, prompt, one, NULL, 1);
    EXPECT_TRUE(strstr(with_a.buf, "orange tiger seven") != NULL);
    EXPECT_TRUE(strcmp(base.buf, with_a.buf) != 0);
    const plora_adapter *two[2] = {a, a};
    float halves[2] = {0.5f, 0.5f};
    struct text halves_text = greedy(m, prompt, two, halves, 2);
    EXPECT_TRUE(strcmp(halves_text.buf, with_a.buf) == 0);
    float zero[1] = {0.0f};
    struct text zero_text = greedy(m, prompt, one, zero, 1);
    EXPECT_TRUE(strcmp(zero_text.buf, base.buf) == 0);
    printf("# base: \"%s\"; with the adapter: \"%s\"\n", base.buf, with_a.buf);
    struct text t1;
    memset(&t1, 0, sizeof t1);
    EXPECT_OK(plora_generate(m, path("facts"), prompt, 16, 0.0f, 0, collect, &t1));
    EXPECT_TRUE(strcmp(t1.buf, with_a.buf) == 0);
    memset(&t1, 0, sizeof t1);
    EXPECT_OK(plora_generate(m, NULL, prompt, 16, 0.9f, 42, collect, &t1)); /* sampled */
    EXPECT_TRUE(t1.len > 0);

    /* --- llama.cpp GGUF export, loaded back --- */
    EXPECT_OK(plora_adapter_export_gguf(a, path("facts.gguf"), PLORA_DTYPE_F32));
    EXPECT_OK(plora_adapter_export_gguf(a, path("facts-f16.gguf"), PLORA_DTYPE_F16));
    plora_adapter *g = NULL;
    EXPECT_OK(plora_adapter_load(m, path("facts.gguf"), &g));
    const plora_adapter *gl[1] = {g};
    struct text with_g = greedy(m, prompt, gl, NULL, 1);
    EXPECT_TRUE(strcmp(with_g.buf, with_a.buf) == 0);
    EXPECT_OK(plora_adapter_save(g, path("from-gguf")));
    EXPECT_TRUE(exists(path("from-gguf/adapter_config.json")));
    plora_adapter_free(g);

    /* --- merged into the base: the merged model alone continues like base + adapter --- */
    double requant = -1;
    EXPECT_OK(plora_merge(m, one, NULL, 1, path("merged-f32.gguf"), PLORA_TYPE_F32, &requant));
    EXPECT_TRUE(requant == 0.0);
    EXPECT_OK(plora_merge(m, one, NULL, 1, path("merged-q8.gguf"), PLORA_TYPE_SAME, &requant));
    EXPECT_TRUE(requant > 0.0 && requant < 0.05);
    plora_model *merged = NULL;
    EXPECT_OK(plora_model_open(path("merged-f32.gguf"), 2, 0, &merged));
    struct text merged_text = greedy(merged, prompt, NULL, NULL, 0);
    EXPECT_TRUE(strcmp(merged_text.buf, with_a.buf) == 0);
    plora_model_free(merged);
    plora_adapter_free(a);

    /* --- chat: records rendered with the model's template, chat prompts --- */
    plora_model *mc = NULL;
    EXPECT_OK(plora_model_open(chat_path, 2, 0, &mc));
    mi.struct_size = sizeof mi;
    EXPECT_OK(plora_model_get_info(mc, &mi));
    EXPECT_TRUE(mi.has_chat_template == 1);
    cfg = facts_config();
    cfg.steps = 2;
    EXPECT_OK(plora_trainer_new(mc, &cfg, &t));
    plora_message conv[3] = {{PLORA_ROLE_SYSTEM, "Be brief."},
                             {PLORA_ROLE_USER, "Where is the key?"},
                             {PLORA_ROLE_ASSISTANT, "Under the blue flower pot."}};
    EXPECT_OK(plora_trainer_add_chat(t, conv, 3));
    EXPECT(plora_trainer_add_chat(t, conv, 2), PLORA_ERR_INVALID_ARGUMENT); /* no assistant turn */
    EXPECT_OK(plora_trainer_run(t, 0, NULL, NULL));
    plora_trainer_free(t);
    plora_generate_config gc;
    plora_generate_config_default(&gc);
    gc.chat = 1;
    gc.max_tokens = 8;
    struct text chat_out;
    memset(&chat_out, 0, sizeof chat_out);
    plora_generate_result r;
    r.struct_size = sizeof r;
    EXPECT_OK(plora_generate_ex(mc, &gc, "Where is the key?", collect, &chat_out, &r));
    EXPECT_TRUE(r.generated_tokens > 0 && r.prompt_tokens > 8);
    plora_model_free(mc);

    plora_model_free(m);
    uint64_t heap = 0, peak = 0;
    plora_heap_stats(&heap, &peak);
    printf("# heap at the end %llu bytes, peak %llu\n", (unsigned long long)heap, (unsigned long long)peak);
    return check_summary();
}
