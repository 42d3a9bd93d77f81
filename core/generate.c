/* generate.c - generation over the one forward pass (see generate.h): the key/value cache, the
 * sampler (TransformerLens's utils.sample_logits) and the loop (its HookedTransformer.generate).
 * The forward pass itself, cached or not, is mw_model_forward: this file only feeds it. */
#define _GNU_SOURCE /* qsort_r */
#include "generate.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

/* ================================================================ the key/value cache */
mw_kv_cache *mw_kv_cache_new(const mw_model *m, int64_t B, int64_t cap) {
    const mw_config *c = &m->cfg;
    if (B <= 0 || cap <= 0) {
        mw_seterr("generate: a key/value cache of %lld rows x %lld positions", (long long)B, (long long)cap);
        return NULL;
    }
    mw_kv_cache *kv = calloc(1, sizeof *kv);
    if (!kv) { mw_seterr("generate: out of memory"); return NULL; }
    kv->L = c->n_layers;
    kv->B = B;
    kv->cap = cap;
    kv->G = c->n_key_value_heads > 0 ? c->n_key_value_heads : c->n_heads;
    kv->dh = c->d_head;
    size_t n = (size_t)(kv->L * B * cap * kv->G * kv->dh);
    kv->k = malloc(n * sizeof(float));
    kv->v = malloc(n * sizeof(float));
    kv->mask = calloc((size_t)(B * cap), 1);
    if (!kv->k || !kv->v || !kv->mask) {
        mw_kv_cache_free(kv);
        mw_seterr("generate: out of memory for a key/value cache of %lld rows x %lld positions", (long long)B,
                  (long long)cap);
        return NULL;
    }
    return kv;
}

void mw_kv_cache_free(mw_kv_cache *kv) {
    if (!kv) return;
    free(kv->k);
    free(kv->v);
    free(kv->mask);
    free(kv);
}

int64_t mw_kv_cache_bytes(const mw_kv_cache *kv) {
    return 2 * kv->L * kv->B * kv->cap * kv->G * kv->dh * (int64_t)sizeof(float) + kv->B * kv->cap;
}

/* ================================================================ sampling */
int mw_sample_check(const mw_sample_opts *o, const char *fname) {
    if (!(o->temperature >= 0) || isinf(o->temperature))
        return mw_seterr("%s: temperature must be a number >= 0, got %g", fname, o->temperature);
    if (o->top_k < 0) return mw_seterr("%s: top_k must be a positive integer, got %lld", fname, (long long)o->top_k);
    if (o->top_p != 0 && !(o->top_p > 0 && o->top_p <= 1))
        return mw_seterr("%s: top_p must be in (0, 1], got %g", fname, o->top_p);
    if (!(o->freq_penalty >= 0) || isinf(o->freq_penalty))
        return mw_seterr("%s: freq_penalty must be a number >= 0, got %g", fname, o->freq_penalty);
    return 0;
}

int mw_sampler_init(mw_sampler *s, int64_t V) {
    memset(s, 0, sizeof *s);
    s->V = V;
    s->z = malloc((size_t)V * sizeof(double));
    s->w = malloc((size_t)V * sizeof(double));
    s->idx = malloc((size_t)V * sizeof(int64_t));
    if (!s->z || !s->w || !s->idx) {
        mw_sampler_free(s);
        return mw_seterr("generate: out of memory");
    }
    return 0;
}

void mw_sampler_free(mw_sampler *s) {
    free(s->z);
    free(s->w);
    free(s->idx);
    memset(s, 0, sizeof *s);
}

/* a uniform double in [0, 1) from the top 53 bits of one draw */
static double uniform53(mw_rng *g) { return (double)(mw_rng_next(g) >> 11) * 0x1.0p-53; }

/* the k-th largest (k >= 1) of w [n], which is reordered (quickselect, Hoare partition) */
static double kth_largest(double *w, int64_t n, int64_t k) {
    int64_t lo = 0, hi = n - 1, want = k - 1;
    while (lo < hi) {
        double pivot = w[lo + (hi - lo) / 2];
        int64_t i = lo, j = hi;
        while (i <= j) {
            while (w[i] > pivot) i++;
            while (w[j] < pivot) j--;
            if (i <= j) {
                double t = w[i];
                w[i++] = w[j];
                w[j--] = t;
            }
        }
        if (want <= j) hi = j;
        else if (want >= i) lo = i;
        else return w[want]; /* between the halves: equal to the pivot */
    }
    return w[want];
}

/* descending by z, then ascending id (a fixed order for ties) */
static int by_z_desc(const void *a, const void *b, void *ctx) {
    const double *z = ctx;
    int64_t i = *(const int64_t *)a, j = *(const int64_t *)b;
    if (z[i] != z[j]) return z[i] > z[j] ? -1 : 1;
    return (i > j) - (i < j);
}

int64_t mw_sample(mw_sampler *s, const float *logits, const mw_sample_opts *o, const int64_t *counts, mw_rng *g) {
    int64_t V = s->V, best = 0;
    if (!o->do_sample || o->temperature == 0) {
        for (int64_t i = 1; i < V; i++)
            if (logits[i] > logits[best]) best = i;
        return best;
    }
    /* z = logits / T - freq_penalty * counts (NaN counts as -inf: it can never be drawn) */
    double *z = s->z, *w = s->w, mx = -INFINITY;
    for (int64_t i = 0; i < V; i++) {
        double v = isnan(logits[i]) ? -INFINITY : (double)logits[i] / o->temperature;
        if (o->freq_penalty > 0 && counts) v -= o->freq_penalty * (double)counts[i];
        z[i] = v;
        if (v > mx) mx = v;
    }
    if (!isfinite(mx))
        return mw_seterr("generate: cannot sample from logits that are all -inf / NaN or hold +inf");
    if (o->top_k > 0 && o->top_k < V) {
        /* torch's top_k filter: every z below the k-th largest goes; ties with it stay */
        memcpy(w, z, (size_t)V * sizeof(double));
        double kth = kth_largest(w, V, o->top_k);
        for (int64_t i = 0; i < V; i++)
            if (z[i] < kth) z[i] = -INFINITY;
    } else if (o->top_p > 0) {
        /* in descending order, a token stays when the mass before it is <= top_p */
        double total = 0;
        for (int64_t i = 0; i < V; i++) total += exp(z[i] - mx);
        for (int64_t i = 0; i < V; i++) s->idx[i] = i;
        qsort_r(s->idx, (size_t)V, sizeof(int64_t), by_z_desc, z);
        double before = 0;
        int64_t k = 0;
        for (; k < V && (k == 0 || before <= o->top_p); k++) before += exp(z[s->idx[k]] - mx) / total;
        for (; k < V; k++) z[s->idx[k]] = -INFINITY;
    }
    /* one draw from softmax(z): the token whose interval of the cumulative weights (in id
     * order) holds u * total */
    double total = 0;
    for (int64_t i = 0; i < V; i++) total += (w[i] = exp(z[i] - mx));
    double u = uniform53(g) * total;
    int64_t last = -1;
    for (int64_t i = 0; i < V; i++) {
        if (w[i] <= 0) continue;
        last = i;
        u -= w[i];
        if (u < 0) return i;
    }
    return last; /* rounding left u at (or just past) the end: the last token that can be drawn */
}

/* ================================================================ the generation loop */
static int is_stop(const mw_generate_opts *o, int64_t id) {
    for (int i = 0; i < o->n_eos; i++)
        if (o->eos[i] == id) return 1;
    return 0;
}

#define TRY(e) do { if ((e) != 0) goto fail; } while (0)

int mw_generate(mw_model *m, const mw_generate_opts *o, mw_tensor *out) {
    memset(out, 0, sizeof *out);
    const mw_config *c = &m->cfg;
    char s1[256];
    const mw_tensor *pt = o->tokens;
    if (!pt || pt->ndim != 2 || pt->dtype != MW_I64)
        return mw_seterr("generate: tokens must be int64 [batch, pos], got %s",
                         pt ? mw_tensor_shape_str(s1, sizeof s1, pt) : "none");
    int64_t B = pt->shape[0], P = pt->shape[1], n = o->max_new_tokens, Vo = c->d_vocab_out;
    if (B <= 0 || P <= 0) return mw_seterr("generate: empty prompt [%lld,%lld]", (long long)B, (long long)P);
    if (n < 0) return mw_seterr("generate: max_new_tokens must be >= 0, got %lld", (long long)n);
    if (P + n > c->n_ctx)
        return mw_seterr("generate: %lld prompt positions + %lld new tokens exceed n_ctx %lld", (long long)P,
                         (long long)n, (long long)c->n_ctx);
    const mw_tensor *pm = o->attention_mask;
    if (pm && (pm->ndim != 2 || pm->shape[0] != B || pm->shape[1] != P))
        return mw_seterr("generate: attention_mask %s does not match the prompt [%lld,%lld]",
                         mw_tensor_shape_str(s1, sizeof s1, pm), (long long)B, (long long)P);
    if (mw_sample_check(&o->sample, "generate")) return -1;
    if (o->stop_at_eos && o->n_eos <= 0) return mw_seterr("generate: stop_at_eos needs an eos token id");

    /* seq [B, P+n] the prompt then the new tokens; mask [B, P+n] (bool) its padding */
    mw_tensor seq = {0}, mask = {0}, tv = {0}, mv = {0};
    mw_forward_out fout = {0};
    mw_kv_cache *kv = NULL;
    mw_sampler smp = {0};
    int64_t *counts = NULL;
    uint8_t *finished = NULL;
    int64_t sh[2] = {B, P + n}, steps = 0;
    TRY(mw_tensor_empty(&seq, MW_I64, 2, sh));
    TRY(mw_tensor_full(&mask, MW_BOOL, 2, sh, 1));
    int64_t *sd = mw_tensor_data(&seq);
    uint8_t *md = mw_tensor_data(&mask);
    for (int64_t idx[2] = {0, 0}; idx[0] < B; idx[0]++)
        for (idx[1] = 0; idx[1] < P; idx[1]++) {
            sd[idx[0] * (P + n) + idx[1]] = (int64_t)mw_tensor_get(pt, idx);
            if (pm) md[idx[0] * (P + n) + idx[1]] = mw_tensor_get(pm, idx) != 0;
        }
    finished = calloc((size_t)B, 1);
    if (!finished) { mw_seterr("generate: out of memory"); goto fail; }
    if (n > 0) TRY(mw_sampler_init(&smp, Vo));
    int sampling = o->sample.do_sample && o->sample.temperature > 0;
    if (sampling && o->sample.freq_penalty > 0) {
        /* TransformerLens counts every token of the row (prompt, padding and new tokens) */
        counts = calloc((size_t)(B * Vo), sizeof(int64_t));
        if (!counts) { mw_seterr("generate: out of memory"); goto fail; }
        for (int64_t b = 0; b < B; b++)
            for (int64_t p = 0; p < P; p++) {
                int64_t t = sd[b * (P + n) + p];
                if (t >= 0 && t < Vo) counts[b * Vo + t]++;
            }
    }
    if (o->use_past_kv_cache && n > 0) {
        kv = mw_kv_cache_new(m, B, P + n);
        if (!kv) goto fail;
    }
    mw_rng *g = o->rng ? o->rng : mw_rng_default();
    mw_forward_opts fo;
    mw_forward_opts_default(&fo, m);
    fo.want = o->want;
    fo.deliver = o->deliver;
    fo.ud = o->ud;
    fo.kv = kv;
    for (int64_t t = 0; t < n; t++) {
        if (mw_interrupted()) { mw_seterr("generate: interrupted"); goto fail; }
        /* this step's input: with the cache the prompt, then the token sampled last; without it
         * the whole sequence so far */
        int64_t from = kv && t > 0 ? P + t - 1 : 0, len = kv ? (t > 0 ? 1 : P) : P + t;
        TRY(mw_tensor_narrow(&tv, &seq, 1, from, len));
        TRY(mw_tensor_narrow(&mv, &mask, 1, from, len));
        fo.tokens = &tv;
        fo.attention_mask = pm ? &mv : NULL;
        int rc = mw_model_forward(m, &fo, &fout);
        mw_tensor_release(&tv);
        mw_tensor_release(&mv);
        if (rc) goto fail;
        /* logits [B, Pq, Vo]: each row's last position */
        int64_t Pq = fout.logits.shape[1];
        const float *lg = mw_tensor_data(&fout.logits);
        int all = 1;
        for (int64_t b = 0; b < B; b++) {
            int64_t id = o->eos_pad;
            if (!finished[b]) {
                id = mw_sample(&smp, lg + (b * Pq + Pq - 1) * Vo, &o->sample, counts ? counts + b * Vo : NULL, g);
                if (id < 0) goto fail;
                if (o->stop_at_eos && is_stop(o, id)) finished[b] = 1;
            }
            sd[b * (P + n) + P + t] = id;
            if (counts && id >= 0 && id < Vo) counts[b * Vo + id]++;
            all &= finished[b];
        }
        mw_forward_out_release(&fout);
        steps = t + 1;
        if (o->on_step && o->on_step(o->step_ud, steps, n)) goto fail;
        if (o->stop_at_eos && all) break;
    }
    TRY(mw_tensor_narrow(&tv, &seq, 1, 0, P + steps));
    TRY(mw_tensor_clone(out, &tv));
    mw_tensor_release(&tv);
    mw_tensor_release(&seq);
    mw_tensor_release(&mask);
    mw_kv_cache_free(kv);
    mw_sampler_free(&smp);
    free(counts);
    free(finished);
    return 0;
fail:
    mw_forward_out_release(&fout);
    mw_tensor_release(&tv);
    mw_tensor_release(&mv);
    mw_tensor_release(&seq);
    mw_tensor_release(&mask);
    mw_tensor_release(out);
    mw_kv_cache_free(kv);
    mw_sampler_free(&smp);
    free(counts);
    free(finished);
    return -1;
}
