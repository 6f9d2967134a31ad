// Logits of llama.cpp for a token sequence, with or without a LoRA adapter.
// usage: lora_logits MODEL.gguf ADAPTER.gguf[:SCALE][,ADAPTER2.gguf[:SCALE]...]|- 1,2,3,...
// prints JSON {"n_vocab", "ids", "logits": [[...] per position]} on stdout
#include "llama.h"
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void quiet(enum ggml_log_level level, const char * text, void * ud) { (void)level; (void)text; (void)ud; }

int main(int argc, char ** argv) {
    if (argc != 4) { fprintf(stderr, "usage: %s MODEL ADAPTERS|- IDS\n", argv[0]); return 2; }
    llama_log_set(quiet, NULL);
    llama_backend_init();
    struct llama_model_params mp = llama_model_default_params();
    mp.n_gpu_layers = 0;
    struct llama_model * model = llama_model_load_from_file(argv[1], mp);
    if (!model) { fprintf(stderr, "model load failed\n"); return 1; }
    llama_token ids[4096]; int n = 0;
    for (char * p = strtok(argv[3], ","); p && n < 4096; p = strtok(NULL, ",")) ids[n++] = atoi(p);
    struct llama_context_params cp = llama_context_default_params();
    cp.n_ctx = n < 64 ? 64 : n; cp.n_batch = cp.n_ctx; cp.n_ubatch = cp.n_ctx;
    cp.n_threads = 1; cp.n_threads_batch = 1;
    cp.type_k = GGML_TYPE_F32; cp.type_v = GGML_TYPE_F32;
    cp.flash_attn_type = LLAMA_FLASH_ATTN_TYPE_DISABLED;
    struct llama_context * ctx = llama_init_from_model(model, cp);
    if (!ctx) { fprintf(stderr, "context failed\n"); return 1; }
    struct llama_adapter_lora * ads[16]; float scales[16]; size_t n_ads = 0;
    if (strcmp(argv[2], "-") != 0) {
        char * save = NULL;
        for (char * item = strtok_r(argv[2], ",", &save); item; item = strtok_r(NULL, ",", &save)) {
            float scale = 1.0f;
            char * colon = strrchr(item, ':');
            if (colon) { *colon = 0; scale = (float)atof(colon + 1); }
            struct llama_adapter_lora * ad = llama_adapter_lora_init(model, item);
            if (!ad) { fprintf(stderr, "llama_adapter_lora_init refused %s\n", item); return 1; }
            if (n_ads == 16) { fprintf(stderr, "too many adapters\n"); return 1; }
            ads[n_ads] = ad; scales[n_ads++] = scale;
            fprintf(stderr, "applying %s at scale %g\n", item, scale);
        }
        // llama.cpp's API since 2026 sets every adapter at once (llama_set_adapters_lora).
        if (llama_set_adapters_lora(ctx, ads, n_ads, scales) != 0) { fprintf(stderr, "set adapters failed\n"); return 1; }
    }
    struct llama_batch b = llama_batch_init(n, 0, 1);
    for (int i = 0; i < n; i++) {
        b.token[i] = ids[i]; b.pos[i] = i; b.n_seq_id[i] = 1; b.seq_id[i][0] = 0; b.logits[i] = 1;
    }
    b.n_tokens = n;
    if (llama_decode(ctx, b) != 0) { fprintf(stderr, "decode failed\n"); return 1; }
    int nv = llama_vocab_n_tokens(llama_model_get_vocab(model));
    printf("{\"n_vocab\": %d, \"ids\": [", nv);
    for (int i = 0; i < n; i++) printf("%s%d", i ? ", " : "", ids[i]);
    printf("], \"logits\": [");
    for (int i = 0; i < n; i++) {
        const float * l = llama_get_logits_ith(ctx, i);
        printf("%s[", i ? ", " : "");
        for (int j = 0; j < nv; j++) printf("%s%.7g", j ? ", " : "", l[j]);
        printf("]");
    }
    printf("]}\n");
    llama_batch_free(b); llama_free(ctx); llama_model_free(model); llama_backend_free();
    return 0;
}
