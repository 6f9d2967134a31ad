/* cancel.c — stopping training from outside, and threads: a progress callback that asks to
 * stop; plora_trainer_cancel() from a second thread ending a run within one micro-step (one
 * record's forward and backward pass), the interrupted step discarded and the run
 * continuing afterwards; a cancel before a run; freeing a trainer from another thread while
 * it trains; generating on the same model from another thread meanwhile.
 *
 *   cancel MODEL.gguf SCRATCH_DIR [RECORDS_PER_STEP [TOKENS_PER_RECORD]]
 */
#define _POSIX_C_SOURCE 200809L
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "check.h"
#include "pocketlora.h"

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static void sleep_s(double s) {
    struct timespec ts;
    ts.tv_sec = (time_t)s;
    ts.tv_nsec = (long)((s - (double)ts.tv_sec) * 1e9);
    nanosleep(&ts, NULL);
}

static uint32_t n_vocab = 0;

/* n synthetic records of len token ids each. */
static void add_records(plora_trainer *t, int n, int len) {
    int32_t *ids = malloc(sizeof(int32_t) * (size_t)len);
    for (int i = 0; i < n; i++) {
        for (int j = 0; j < len; j++) ids[j] = (int32_t)((1u + (uint32_t)i * 7u + (uint32_t)j * 13u) % n_vocab);
        EXPECT_OK(plora_trainer_add_ids(t, ids, NULL, (size_t)len));
    }
    free(ids);
}

static plora_trainer *new_trainer(plora_model *m, uint32_t steps, uint32_t batch) {
    plora_train_config cfg;
    plora_train_config_default(&cfg);
    cfg.rank = 4;
    cfg.steps = steps;
    cfg.batch = batch;
    cfg.lr = 1e-3f;
    plora_trainer *t = NULL;
    EXPECT_OK(plora_trainer_new(m, &cfg, &t));
    return t;
}

static uint32_t steps_done(plora_trainer *t) {
    plora_trainer_info info;
    info.struct_size = sizeof info;
    if (plora_trainer_get_info(t, &info) != PLORA_OK) return 0xffffffffu;
    return info.steps_done;
}

/* --- a callback that stops --- */
static int32_t stop_at_3(const plora_progress *p, void *user_data) {
    (void)user_data;
    return p->step == 3;
}

/* --- a second thread that cancels or frees during a step --- */
struct shared {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    plora_trainer *t;
    int free_instead; /* the thread frees the trainer instead of cancelling it */
    uint32_t trigger_step; /* act while the step after this one runs */
    double step_start, step_end; /* of the step before trigger_step's (to size a step) */
    int triggered;
    double acted_at;
};

static int32_t signal_progress(const plora_progress *p, void *user_data) {
    struct shared *s = user_data;
    double t = now();
    pthread_mutex_lock(&s->mu);
    if (p->step == s->trigger_step - 1) s->step_start = t;
    if (p->step == s->trigger_step) {
        s->step_end = t;
        s->triggered = 1;
        pthread_cond_signal(&s->cv);
    }
    pthread_mutex_unlock(&s->mu);
    return 0;
}

static void *canceller(void *arg) {
    struct shared *s = arg;
    pthread_mutex_lock(&s->mu);
    while (!s->triggered) pthread_cond_wait(&s->cv, &s->mu);
    double step = s->step_end - s->step_start;
    pthread_mutex_unlock(&s->mu);
    /* The next step is under way: act an eighth of a step into it. */
    sleep_s(step / 8);
    s->acted_at = now();
    if (s->free_instead)
        plora_trainer_free(s->t);
    else
        plora_trainer_cancel(s->t);
    return NULL;
}

/* --- generation on the same model from another thread while training --- */
struct gen {
    plora_model *m;
    plora_status st;
    int tokens;
};
static int32_t count_token(const char *piece, int32_t token, void *user_data) {
    (void)piece;
    (void)token;
    ((struct gen *)user_data)->tokens++;
    return 0;
}
static void *generator(void *arg) {
    struct gen *g = arg;
    g->st = plora_generate(g->m, NULL, "Echoes of", 16, 0.0f, 0, count_token, g);
    return NULL;
}

int main(int argc, char **argv) {
    if (argc < 3) {
        fprintf(stderr, "usage: cancel MODEL.gguf SCRATCH_DIR [RECORDS_PER_STEP [TOKENS]]\n");
        return 2;
    }
    int per_step = argc > 3 ? atoi(argv[3]) : 48;
    int len = argc > 4 ? atoi(argv[4]) : 128;
    plora_model *m = NULL;
    EXPECT_OK(plora_model_open(argv[1], 2, 0, &m));
    plora_model_info mi;
    mi.struct_size = sizeof mi;
    EXPECT_OK(plora_model_get_info(m, &mi));
    n_vocab = mi.n_vocab;
    if (len > (int)mi.n_ctx) len = (int)mi.n_ctx;

    /* 1. The progress callback asks to stop after step 3; the run continues later. */
    plora_trainer *t = new_trainer(m, 10, 2);
    add_records(t, 4, 16);
    EXPECT(plora_trainer_run(t, 0, stop_at_3, NULL), PLORA_ERR_CANCELLED);
    EXPECT_TRUE(strstr(plora_last_error(), "progress callback") != NULL);
    EXPECT_TRUE(steps_done(t) == 3);
    EXPECT_OK(plora_trainer_run(t, 2, NULL, NULL));
    EXPECT_TRUE(steps_done(t) == 5);
    EXPECT_OK(plora_trainer_run(t, 0, stop_at_3, NULL));
    EXPECT_TRUE(steps_done(t) == 10);

    /* 2. A cancel with no run in progress: the next run stops at once, the one after runs. */
    plora_trainer_cancel(t);
    plora_trainer_free(t);
    t = new_trainer(m, 10, 2);
    add_records(t, 4, 16);
    plora_trainer_cancel(t);
    EXPECT(plora_trainer_run(t, 0, NULL, NULL), PLORA_ERR_CANCELLED);
    EXPECT_TRUE(strstr(plora_last_error(), "plora_trainer_cancel") != NULL);
    EXPECT_TRUE(steps_done(t) == 0);
    EXPECT_OK(plora_trainer_run(t, 1, NULL, NULL));
    EXPECT_TRUE(steps_done(t) == 1);
    plora_trainer_free(t);

    /* 3. plora_trainer_cancel() from a second thread while step 3 (per_step records) runs;
     * meanwhile a third thread generates on the same model. */
    t = new_trainer(m, 100, (uint32_t)per_step);
    add_records(t, per_step, len);
    struct shared s;
    memset(&s, 0, sizeof s);
    pthread_mutex_init(&s.mu, NULL);
    pthread_cond_init(&s.cv, NULL);
    s.t = t;
    s.trigger_step = 2;
    pthread_t th, gth;
    pthread_create(&th, NULL, canceller, &s);
    struct gen g = {m, PLORA_ERR_PANIC, 0};
    pthread_create(&gth, NULL, generator, &g);
    plora_status st = plora_trainer_run(t, 0, signal_progress, &s);
    double returned = now();
    pthread_join(th, NULL);
    pthread_join(gth, NULL);
    EXPECT(st, PLORA_ERR_CANCELLED);
    EXPECT_TRUE(steps_done(t) == 2); /* step 3 was interrupted, not finished */
    double step = s.step_end - s.step_start, latency = returned - s.acted_at;
    expect_true(latency < step, "the cancel took effect before the step would have ended", __LINE__);
    printf("ok - cancel from a second thread ended the run %.1f ms after the request; "
           "a step of %d records takes %.1f ms, so one record %.1f ms\n",
           latency * 1e3, per_step, step * 1e3, step * 1e3 / per_step);
    EXPECT_TRUE(g.st == PLORA_OK && g.tokens > 0);
    /* Nothing of step 3 was applied; training goes on from step 2. */
    EXPECT_OK(plora_trainer_run(t, 1, NULL, NULL));
    EXPECT_TRUE(steps_done(t) == 3);

    /* 4. The trainer freed from another thread while it trains: the run ends cancelled, the
     * memory goes when it returns, and the stale handle is refused afterwards. */
    memset(&s, 0, sizeof s);
    pthread_mutex_init(&s.mu, NULL);
    pthread_cond_init(&s.cv, NULL);
    s.t = t;
    s.free_instead = 1;
    s.trigger_step = 5;
    pthread_create(&th, NULL, canceller, &s);
    st = plora_trainer_run(t, 0, signal_progress, &s);
    pthread_join(th, NULL);
    EXPECT(st, PLORA_ERR_CANCELLED);
    EXPECT(plora_trainer_run(t, 1, NULL, NULL), PLORA_ERR_INVALID_ARGUMENT);

    plora_model_free(m);
    return check_summary();
}
