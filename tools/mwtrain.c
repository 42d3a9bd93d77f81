/* mwtrain.c - trains a small transformer from a text corpus, end to end, from C:
 *   corpus (tools/make_corpus.sh) -> byte-level BPE tokenizer -> token files -> AdamW training with
 *   induction-score logging -> a TransformerLens-named model folder.
 *
 *   build/mwtrain [key=value ...]
 *     corpus=data/corpus  out=models/attn_only_2L  work=data/work  (tokenizer, token files,
 *     checkpoints and logs go to work/)  name=... (config.json's model_name; default attn_only_<n>L)
 *     vocab=4096 d_model=256 n_heads=8 d_head=32 n_layers=2 n_ctx=256 attn_only=1 norm=none|LN|LNPre
 *     pos=shortformer|standard d_mlp=0 seed=398
 *     batch=16 steps=4000 (the length of the lr schedule) stop=0 (stop after this step; 0: steps)
 *     lr=2e-3 min_lr=2e-4 warmup=200 wd=0.1 clip=1 threads=2
 *     init=0 (std of W_* at init; 0: TransformerLens's 0.8/sqrt(d_model))
 *     short_T=0 short_steps=0 (the first short_steps steps use rows of short_T tokens, as many
 *     tokens per step: attention over few positions learns positional patterns much faster)
 *     short_repeat=-1 short_random=-1 (the row mix of the short phase; -1: as repeat, random)
 *     repeat=0 random=0 (fractions of rows that repeat their opening / open with repeated random
 *     ids, see mw_dataset_batch_repeat)
 *     log_every=10 eval_every=100 ckpt_every=500 resume=0 bench=0
 *
 * Logs (CSV, in work/): train_log.csv (step, tokens, loss, lr, grad_norm, seconds),
 * eval_log.csv (step, val_loss, then the induction score of every head "L.H", the largest
 * previous-token score, and the mean log-prob gap between the halves of repeated random tokens).
 * The Lua driver (scripts/train_attn_only.lua) does the same through mi.train; this program
 * exists so that training does not wait on the Lua layer, and for profiling.
 */
#include <cblas.h>
#include <cjson/cJSON.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "bpe_train.h"
#include "config.h"
#include "dataset.h"
#include "tokenizer.h"
#include "mw_tensor.h"
#include "train.h"

void openblas_set_num_threads(int);

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

typedef struct {
    const char *corpus, *out, *work, *norm, *pos, *name;
    long vocab, d_model, n_heads, d_head, n_layers, n_ctx, attn_only, d_mlp, seed;
    long batch, steps, stop, warmup, threads, log_every, eval_every, ckpt_every, resume, bench, short_T, short_steps;
    double lr, min_lr, wd, clip, init, repeat, random, short_repeat, short_random;
} opts_t;

static int parse(opts_t *o, int argc, char **argv) {
    for (int i = 1; i < argc; i++) {
        char *eq = strchr(argv[i], '=');
        if (!eq) { fprintf(stderr, "mwtrain: argument '%s' is not key=value\n", argv[i]); return -1; }
        *eq = 0;
        const char *k = argv[i], *v = eq + 1;
#define S(name) if (!strcmp(k, #name)) { o->name = v; continue; }
#define IV(name) if (!strcmp(k, #name)) { o->name = atol(v); continue; }
#define F(name) if (!strcmp(k, #name)) { o->name = atof(v); continue; }
        S(corpus) S(out) S(work) S(norm) S(pos) S(name)
        IV(vocab) IV(d_model) IV(n_heads) IV(d_head) IV(n_layers) IV(n_ctx) IV(attn_only) IV(d_mlp) IV(seed)
        IV(batch) IV(steps) IV(stop) IV(warmup) IV(threads) IV(log_every) IV(eval_every) IV(ckpt_every) IV(resume) IV(bench) IV(short_T) IV(short_steps)
        F(lr) F(min_lr) F(wd) F(clip) F(init) F(repeat) F(random) F(short_repeat) F(short_random)
        fprintf(stderr, "mwtrain: unknown key '%s'\n", k);
        return -1;
    }
    return 0;
}

static int exists(const char *p) { struct stat st; return stat(p, &st) == 0; }

static char *path2(const char *dir, const char *name) {
    char *p = malloc(strlen(dir) + strlen(name) + 2);
    sprintf(p, "%s/%s", dir, name);
    return p;
}

static int encode_file(mw_tokenizer *t, const char *txt, const char *tok) {
    int64_t *ids = NULL;
    size_t nids = 0;
    if (mw_tokenizer_encode_file(&ids, &nids, t, txt)) {
        fprintf(stderr, "mwtrain: %s\n", mw_error());
        return -1;
    }
    int rc = mw_dataset_write(tok, ids, (int64_t)nids, mw_tokenizer_vocab_size(t),
                              mw_tokenizer_special_id(t, MW_TOK_EOS));
    if (rc) fprintf(stderr, "mwtrain: %s\n", mw_error());
    else printf("mwtrain: %s: %zu tokens\n", tok, nids);
    free(ids);
    return rc;
}

/* induction scores [L*H] on [BOS, R, R] (seq_len 50, batch 10), previous-token scores [L*H] on
 * validation text, and the mean log-probs of the two copies of R */
typedef struct { double ind[256]; double prev[256]; double gap, first, second; } probe_t;

static int probe(mw_trainer *t, const mw_dataset *val, probe_t *pr, uint64_t seed) {
    if (mw_trainer_induction(t, 50, 10, seed, pr->ind, &pr->first, &pr->second)) return -1;
    pr->gap = pr->second - pr->first;
    enum { PB = 8, PT = 128 };
    static int64_t ptok[PB * PT];
    uint64_t ps = seed ^ 0x5555;
    mw_dataset_batch(val, &ps, ptok, PB, PT, 0);
    return mw_trainer_prev_token(t, ptok, PB, PT, pr->prev);
}

static double val_loss(mw_trainer *t, const mw_dataset *val, int64_t B, int64_t T, int nb) {
    static int64_t *tok;
    tok = realloc(tok, sizeof *tok * (size_t)(B * T));
    uint64_t s = 12345; /* the same validation batches every time */
    double sum = 0, loss;
    for (int i = 0; i < nb; i++) {
        mw_dataset_batch(val, &s, tok, B, T, 0);
        mw_trainer_forward(t, tok, B, T, 0, &loss);
        sum += loss;
    }
    return sum / nb;
}

/* writes n bytes to path atomically: a temporary file beside it, then rename; 0 or -1 */
static int write_atomic(const char *path, const char *data, size_t n) {
    size_t lp = strlen(path);
    char *tmp = malloc(lp + 5);
    if (!tmp) return -1;
    memcpy(tmp, path, lp);
    memcpy(tmp + lp, ".tmp", 5);
    FILE *f = fopen(tmp, "wb");
    int bad = !f || fwrite(data, 1, n, f) != n;
    if (f && fclose(f) != 0) bad = 1;
    if (bad || rename(tmp, path) != 0) {
        fprintf(stderr, "mwtrain: cannot write %s\n", path);
        remove(tmp);
        free(tmp);
        return -1;
    }
    free(tmp);
    return 0;
}

/* the model folder: model.safetensors (TransformerLens names), config.json, tokenizer.json */
static int export_model(mw_trainer *t, const opts_t *o, const char *tokpath) {
    const mw_config *c = mw_trainer_config(t);
    mkdir(o->out, 0755);
    char *mp = path2(o->out, "model.safetensors");
    int rc = mw_trainer_export(t, mp);
    free(mp);
    if (rc) { fprintf(stderr, "mwtrain: %s\n", mw_error()); return -1; }
    /* config.json: the finished config as core/config.c writes it, plus TransformerLens's string
     * fields */
    cJSON *js = mw_config_to_json(c);
    if (!js) { fprintf(stderr, "mwtrain: %s\n", mw_error()); return -1; }
    char name[64];
    snprintf(name, sizeof name, "attn_only_%lldL", (long long)c->n_layers);
    cJSON_AddStringToObject(js, "model_name", o->name ? o->name : name);
    cJSON_AddStringToObject(js, "attention_dir", "causal");
    cJSON_AddStringToObject(js, "tokenizer_name", "tokenizer.json");
    cJSON_AddBoolToObject(js, "default_prepend_bos", 1);
    cJSON_AddStringToObject(js, "original_architecture", "miwb");
    char *text = cJSON_Print(js);
    cJSON_Delete(js);
    if (!text) return -1;
    size_t tl = strlen(text);
    text[tl] = '\n'; /* cJSON's buffer ends in the NUL this replaces; written with its length */
    char *cp = path2(o->out, "config.json");
    rc = write_atomic(cp, text, tl + 1);
    free(cp);
    free(text);
    if (rc) return -1;
    /* tokenizer.json: a copy of the work folder's */
    FILE *in = fopen(tokpath, "rb");
    if (!in) return -1;
    char *data = NULL;
    size_t n = 0, cap = 0, k;
    char buf[65536];
    while ((k = fread(buf, 1, sizeof buf, in)) > 0) {
        if (n + k > cap) {
            cap = 2 * (n + k);
            char *d2 = realloc(data, cap);
            if (!d2) { free(data); fclose(in); return -1; }
            data = d2;
        }
        memcpy(data + n, buf, k);
        n += k;
    }
    fclose(in);
    char *dst = path2(o->out, "tokenizer.json");
    rc = write_atomic(dst, data ? data : "", n);
    free(dst);
    free(data);
    return rc;
}

int main(int argc, char **argv) {
    opts_t o = {.corpus = "data/corpus", .out = "models/attn_only_2L", .work = "data/work", .norm = "none",
                .pos = "shortformer", .vocab = 4096, .d_model = 256, .n_heads = 8, .d_head = 32, .n_layers = 2,
                .n_ctx = 256, .attn_only = 1, .d_mlp = 0, .seed = 398, .batch = 16, .steps = 4000,
                .warmup = 200, .threads = 2, .log_every = 10, .eval_every = 100, .ckpt_every = 500,
                .lr = 2e-3, .min_lr = 2e-4, .wd = 0.1, .clip = 1.0,
                .short_repeat = -1, .short_random = -1};
    if (parse(&o, argc, argv)) return 2;
    openblas_set_num_threads((int)o.threads);
    mkdir("data", 0755);
    mkdir(o.work, 0755);
    char *tokpath = path2(o.work, "tokenizer.json");
    char *trtxt = path2(o.corpus, "train.txt"), *vatxt = path2(o.corpus, "valid.txt");
    char *trtok = path2(o.work, "train.tok"), *vatok = path2(o.work, "valid.tok");
    mw_bpe *bpe = NULL;
    if (!exists(tokpath)) {
        double t0 = now();
        mw_bpe_trainer *bt = mw_bpe_trainer_new();
        if (!bt || mw_bpe_trainer_feed_file(bt, trtxt) || mw_bpe_train(&bpe, bt, (int)o.vocab, 2) ||
            mw_bpe_save(bpe, tokpath)) {
            fprintf(stderr, "mwtrain: tokenizer: %s\n", mw_error());
            return 1;
        }
        mw_bpe_trainer_free(bt);
        printf("mwtrain: tokenizer %s: %d ids in %.1f s\n", tokpath, mw_bpe_vocab_size(bpe), now() - t0);
        mw_bpe_free(bpe);
    }
    if (!exists(trtok) || !exists(vatok)) {
        mw_tokenizer *tk = NULL;
        if (mw_tokenizer_load(&tk, tokpath)) { fprintf(stderr, "mwtrain: %s\n", mw_error()); return 1; }
        int rc = encode_file(tk, trtxt, trtok) || encode_file(tk, vatxt, vatok);
        mw_tokenizer_free(tk);
        if (rc) return 1;
    }
    mw_dataset tr, va;
    if (mw_dataset_open(&tr, trtok) || mw_dataset_open(&va, vatok)) { fprintf(stderr, "mwtrain: %s\n", mw_error()); return 1; }

    mw_config c;
    mw_config_default(&c);
    c.d_model = o.d_model; c.d_head = o.d_head; c.n_heads = o.n_heads; c.n_layers = o.n_layers;
    c.n_ctx = o.n_ctx; c.d_vocab = tr.vocab; c.d_mlp = o.attn_only ? -1 : o.d_mlp; c.attn_only = (int)o.attn_only;
    if (!o.attn_only) c.act_fn = MW_ACT_GELU_NEW;
    c.use_attn_result = 1; /* as the seed notebook's attention-only models (hook_result) */
    c.normalization_type = !strcmp(o.norm, "LN") ? MW_NORM_LN : !strcmp(o.norm, "LNPre") ? MW_NORM_LNPRE : MW_NORM_NONE;
    c.positional_embedding_type = !strcmp(o.pos, "shortformer") ? MW_POS_SHORTFORMER : MW_POS_STANDARD;
    c.seed = o.seed;
    c.initializer_range = o.init > 0 ? o.init : -1;
    int64_t B = o.batch, T = o.n_ctx;
    int64_t maxB = B > 10 ? B : 10;
    if (o.short_T > 1 && o.short_steps > 0 && B * T / o.short_T > maxB) maxB = B * T / o.short_T;
    mw_trainer *t = mw_trainer_new(&c);
    if (!t) { fprintf(stderr, "mwtrain: %s\n", mw_error()); return 1; }
    int64_t np;
    mw_trainer_params(t, &np);
    mw_adamw_opts ao;
    mw_adamw_default(&ao);
    ao.lr = o.lr; ao.min_lr = o.min_lr; ao.warmup = o.warmup; ao.steps = o.steps; ao.weight_decay = o.wd; ao.clip = o.clip;
    char *ckpt = path2(o.work, "checkpoint.safetensors");
    if (o.resume && exists(ckpt)) {
        if (mw_trainer_load(t, ckpt)) { fprintf(stderr, "mwtrain: %s\n", mw_error()); return 1; }
        printf("mwtrain: resumed at step %lld\n", (long long)mw_trainer_nsteps(t));
    }
    printf("mwtrain: %lld parameters; %lld train tokens, %lld valid; batch %lld x %lld; %ld steps\n", (long long)np,
           (long long)tr.n, (long long)va.n, (long long)B, (long long)T, o.steps);
    char *tlog = path2(o.work, "train_log.csv"), *elog = path2(o.work, "eval_log.csv");
    int fresh = mw_trainer_nsteps(t) == 0;
    FILE *ft = fopen(tlog, fresh ? "w" : "a"), *fe = fopen(elog, fresh ? "w" : "a");
    if (fresh) {
        fprintf(ft, "step,tokens,loss,lr,grad_norm,seconds\n");
        fprintf(fe, "step,tokens,val_loss");
        for (int64_t l = 0; l < c.n_layers; l++)
            for (int64_t h = 0; h < c.n_heads; h++) fprintf(fe, ",ind_%lld.%lld", (long long)l, (long long)h);
        fprintf(fe, ",best_prev,best_prev_head,first_half_logprob,second_half_logprob\n");
    }
    int64_t *tok = malloc(sizeof *tok * (size_t)(maxB * T));
    uint64_t ds = (uint64_t)o.seed * 7919 + (uint64_t)mw_trainer_nsteps(t); /* data order depends on the step */
    double t0 = now(), ema = 0;
    int64_t H = c.n_heads;
    if (o.bench) o.steps = mw_trainer_nsteps(t) + o.bench;
    long last = o.stop > 0 && o.stop < o.steps ? o.stop : o.steps;
    while (mw_trainer_nsteps(t) < last) {
        int64_t s = mw_trainer_nsteps(t);
        if (!o.bench && (s % o.eval_every == 0)) {
            probe_t pr;
            double vl = val_loss(t, &va, B, T, 4);
            probe(t, &va, &pr, 777);
            int bi = 0; double bp = 0;
            fprintf(fe, "%lld,%lld,%.5f", (long long)s, (long long)(s * B * T), vl);
            for (int64_t i = 0; i < c.n_layers * H; i++) fprintf(fe, ",%.4f", pr.ind[i]);
            for (int64_t i = 0; i < c.n_layers * H; i++) if (pr.prev[i] > bp) { bp = pr.prev[i]; bi = (int)i; }
            fprintf(fe, ",%.4f,%d.%d,%.4f,%.4f\n", bp, (int)(bi / H), (int)(bi % H), pr.first, pr.second);
            fflush(fe);
            double top1 = 0, top2 = 0;
            for (int64_t i = 0; i < c.n_layers * H; i++) {
                if (pr.ind[i] > top1) { top2 = top1; top1 = pr.ind[i]; } else if (pr.ind[i] > top2) top2 = pr.ind[i];
            }
            printf("eval step %lld: val %.4f | induction top %.3f %.3f | prev %.3f (%d.%d) | rep gap %.2f nats\n",
                   (long long)s, vl, top1, top2, bp, (int)(bi / H), (int)(bi % H), pr.gap);
            fflush(stdout);
        }
        int64_t sB = B, sT = T;
        double rep = o.repeat, rnd = o.random;
        if (s < o.short_steps && o.short_T > 1) {
            sT = o.short_T; sB = B * T / sT;
            if (o.short_repeat >= 0) rep = o.short_repeat;
            if (o.short_random >= 0) rnd = o.short_random;
        }
        mw_dataset_batch_repeat(&tr, &ds, tok, sB, sT, 0, rep, rnd);
        double loss, gn;
        double ts = now();
        if (mw_trainer_forward(t, tok, sB, sT, 1, &loss) || mw_trainer_step(t, &ao, &gn)) {
            fprintf(stderr, "mwtrain: step %lld: %s\n", (long long)s, mw_error());
            return 1;
        }
        double dt = now() - ts;
        ema = s == 0 || ema == 0 ? loss : 0.98 * ema + 0.02 * loss;
        if ((s + 1) % o.log_every == 0) {
            fprintf(ft, "%lld,%lld,%.5f,%.3g,%.4f,%.2f\n", (long long)(s + 1), (long long)((s + 1) * B * T), loss,
                    mw_adamw_lr(&ao, s), gn, now() - t0);
            fflush(ft);
            printf("step %lld/%ld loss %.4f (avg %.4f) lr %.2e gnorm %.3f | %.0f tok/s | %.2f s/step\n", (long long)(s + 1),
                   o.steps, loss, ema, mw_adamw_lr(&ao, s), gn, (double)(B * T) / dt, dt);
            fflush(stdout);
        }
        if (!o.bench && (s + 1) % o.ckpt_every == 0) {
            if (mw_trainer_save(t, ckpt)) fprintf(stderr, "mwtrain: %s\n", mw_error());
            if (export_model(t, &o, tokpath)) fprintf(stderr, "mwtrain: export failed\n");
        }
    }
    if (!o.bench) {
        probe_t pr;
        double vl = val_loss(t, &va, B, T, 16), trl = val_loss(t, &tr, B, T, 16);
        probe(t, &va, &pr, 777);
        printf("final step %lld: train loss %.4f, val loss %.4f; rep tokens: first half %.3f, second half %.3f (gap %.2f nats)\n",
               (long long)mw_trainer_nsteps(t), trl, vl, pr.first, pr.second, pr.gap);
        for (int64_t i = 0; i < c.n_layers * H; i++)
            printf("  head %lld.%lld: induction %.3f, prev-token %.3f\n", (long long)(i / H), (long long)(i % H), pr.ind[i], pr.prev[i]);
        mw_trainer_save(t, ckpt);
        if (export_model(t, &o, tokpath)) { fprintf(stderr, "mwtrain: export failed\n"); return 1; }
        printf("mwtrain: wrote %s\n", o.out);
    }
    printf("mwtrain: %.1f s\n", now() - t0);
    fclose(ft); fclose(fe);
    free(tok);
    mw_trainer_free(t);
    mw_dataset_close(&tr); mw_dataset_close(&va);
    return 0;
}
