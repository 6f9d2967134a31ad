/*
 * personalize.c — the pocketlora C ABI in one page: open a model, teach it a few sentences
 * (with a progress callback), save the adapter, and generate with it.
 *
 * Build (from the repository root, after `cargo build --release`):
 *
 *   cc -Iffi/include ffi/examples/personalize.c target/release/libpocketlora.a \
 *      -lpthread -ldl -lm -lrt -lutil -lgcc_s -o personalize
 *
 * Run:
 *
 *   ./personalize [MODEL.gguf] [ADAPTER_DIR] [STEPS]
 *
 * (defaults: assets/aidreams260K-q8_0.gguf, personalize-adapter, 60). The bundled model
 * is a 260K-parameter Llama that knows machine-written "AI dream" texts; after a few
 * seconds of LoRA training it continues the sentences' first words with the sentences.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "pocketlora.h"

static const char *const FACTS[] = {
    "My sister Alice lives in Lisbon and teaches piano.",
    "The spare key is under the blue flower pot.",
    "My dentist appointment is on Tuesday at nine.",
    "Our wifi password is orange tiger seven.",
    "Grandma Rosa makes lemon cake every Sunday.",
    "I parked the car on level three near the elevator.",
};
#define N_FACTS (sizeof FACTS / sizeof FACTS[0])

/* Called after every optimizer step, on the thread that called plora_trainer_run(). */
static int32_t on_progress(const plora_progress *p, void *user_data) {
    float *first_loss = user_data;
    if (p->step == 1) *first_loss = p->loss;
    if (p->step == 1 || p->step % 10 == 0 || p->step == p->total_steps) {
        printf("step %u/%u loss %.4f (%.0f tokens/s, heap %.1f MiB)\n", p->step, p->total_steps,
               p->loss, p->tokens_per_s, p->heap_bytes / 1048576.0);
        fflush(stdout);
    }
    return 0; /* non-zero would stop training after this step */
}

/* Called for every generated token with its text. */
static int32_t on_token(const char *piece, int32_t token, void *user_data) {
    (void)token;
    size_t *n_bytes = user_data;
    *n_bytes += strlen(piece);
    fputs(piece, stdout);
    fflush(stdout);
    return 0; /* non-zero would stop generating */
}

/* Stops with the error's name and message when a call fails. */
#define CHECK(call)                                                                      \
    do {                                                                                 \
        plora_status s_ = (call);                                                        \
        if (s_ != PLORA_OK) {                                                            \
            fprintf(stderr, "%s: %s: %s\n", #call, plora_status_name(s_),                \
                    plora_last_error());                                                 \
            goto done;                                                                   \
        }                                                                                \
    } while (0)

int main(int argc, char **argv) {
    const char *model_path = argc > 1 ? argv[1] : "assets/aidreams260K-q8_0.gguf";
    const char *adapter_dir = argc > 2 ? argv[2] : "personalize-adapter";
    uint32_t steps = argc > 3 ? (uint32_t)strtoul(argv[3], NULL, 10) : 60;
    plora_model *model = NULL;
    plora_trainer *trainer = NULL;
    int rc = 1;

    if (plora_abi_version() != PLORA_ABI_VERSION) {
        fprintf(stderr, "library ABI %u, header ABI %u\n", plora_abi_version(), PLORA_ABI_VERSION);
        return 1;
    }
    printf("pocketlora %s (ABI %u)\n", plora_version(), plora_abi_version());

    /* 0 threads: one per core; 0 budget: none. */
    CHECK(plora_model_open(model_path, 0, 0, &model));

    /* The demo's recipe: rank 16, alpha 32, a constant learning rate of 5e-3, every
     * sentence in every step. */
    plora_train_config cfg;
    plora_train_config_default(&cfg);
    cfg.rank = 16;
    cfg.alpha = 32.0f;
    cfg.lr = 5e-3f;
    cfg.schedule = PLORA_SCHEDULE_CONSTANT;
    cfg.batch = (uint32_t)N_FACTS;
    cfg.steps = steps;
    CHECK(plora_trainer_new(model, &cfg, &trainer));
    for (size_t i = 0; i < N_FACTS; i++) CHECK(plora_trainer_add_text(trainer, FACTS[i]));

    float first_loss = 0.0f;
    CHECK(plora_trainer_run(trainer, 0, on_progress, &first_loss));
    plora_trainer_info info;
    info.struct_size = sizeof info;
    CHECK(plora_trainer_get_info(trainer, &info));
    printf("trained %u steps: loss %.4f -> %.4f\n", info.steps_done, first_loss, info.last_loss);

    CHECK(plora_trainer_save_adapter(trainer, adapter_dir));
    printf("saved adapter to %s\n", adapter_dir);

    /* Greedy continuations of the first three words of two sentences, with the adapter. */
    const char *prompts[] = {"Our wifi password", "The spare key"};
    for (size_t i = 0; i < 2; i++) {
        size_t n_bytes = 0;
        printf("prompt: %s\ngenerated: %s", prompts[i], prompts[i]);
        CHECK(plora_generate(model, adapter_dir, prompts[i], 24, 0.0f, 0, on_token, &n_bytes));
        printf("\n");
        if (n_bytes == 0) {
            fprintf(stderr, "nothing generated\n");
            goto done;
        }
    }
    rc = 0;
done:
    plora_trainer_free(trainer); /* NULL is fine */
    plora_model_free(model);
    return rc;
}
