/* test_family_grads.c - the trainer's parameter gradients on the Hugging Face model families
 * (rotary with partial and adjacent-pair layouts, RMSNorm, gated MLPs, grouped-query attention,
 * parallel blocks) against PyTorch autograd in float64: tests/fixtures/gen_hf_families.py writes
 * each family's TransformerLens state dict and config (F_expect.safetensors: tl.<name>, metadata
 * tl_config) and d loss / d every parameter (F_grads.safetensors: loss.param.<name>). The weights
 * go into an mw_trainer, whose forward + backward (mw_trainer_forward with grads) is compared. */
#include <cjson/cJSON.h>
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "checkpoint.h"
#include "model.h"
#include "mwtest.h"
#include "train.h"

static const char *const FAMILIES[] = {"gpt_neox", "llama", "mistral", "qwen2", "gptj"};

/* max |got - want| over max |want| */
static double rel_err(const mw_tensor *got, const mw_tensor *want) {
    int64_t n = mw_tensor_numel(want), idx[MW_MAXDIM] = {0};
    double err = 0, mx = 1e-30;
    for (int64_t i = 0; i < n; i++) {
        double a = mw_tensor_get(got, idx), b = mw_tensor_get(want, idx);
        if (fabs(a - b) > err) err = fabs(a - b);
        if (fabs(b) > mx) mx = fabs(b);
        for (int d = want->ndim - 1; d >= 0; d--) { if (++idx[d] < want->shape[d]) break; idx[d] = 0; }
    }
    return err / mx;
}

static void family(const char *fam) {
    char path[256];
    mw_state_dict ex = {0}, gr = {0};
    snprintf(path, sizeof path, "tests/fixtures/hf_families/%s_expect.safetensors", fam);
    CHECK_OK(mw_checkpoint_load(&ex, path));
    snprintf(path, sizeof path, "tests/fixtures/hf_families/%s_grads.safetensors", fam);
    CHECK_OK(mw_checkpoint_load(&gr, path));
    const char *tl = NULL;
    for (int i = 0; i < ex.n_meta; i++)
        if (!strcmp(ex.meta_keys[i], "tl_config")) tl = ex.meta_values[i];
    CHECK(tl != NULL);
    cJSON *js = tl ? cJSON_Parse(tl) : NULL;
    mw_config c;
    int ok = js && mw_config_from_json(&c, js) == 0;
    CHECK_MSG(ok, "%s: tl_config: %s", fam, mw_error());
    cJSON_Delete(js);
    mw_trainer *t = NULL;
    if (ok) {
        c.n_ctx = 32;
        t = mw_trainer_new(&c);
        CHECK_MSG(t != NULL, "%s: trainer: %s", fam, mw_error());
    }
    if (!t) goto done;
    mw_model *m = mw_trainer_model(t);
    int nset = 0;
    for (int i = 0; i < ex.n; i++)
        if (!strncmp(ex.items[i].name, "tl.", 3)) {
            CHECK_OK(mw_model_param_set(m, ex.items[i].name + 3, &ex.items[i].t));
            nset++;
        }
    const mw_tensor *tok = mw_state_dict_get(&ex, "tokens"), *loss = mw_state_dict_get(&ex, "raw.loss");
    CHECK(tok && loss && nset > 10);
    if (!tok || !loss) goto done;
    int64_t B = tok->shape[0], T = tok->shape[1], ids[64];
    for (int64_t i = 0; i < B * T && i < 64; i++) ids[i] = ((const int64_t *)mw_tensor_data(tok))[i];
    double l;
    CHECK_OK(mw_trainer_forward(t, ids, B, T, 1, &l));
    CHECK_NEAR(l, ((const float *)mw_tensor_data(loss))[0], 1e-5);
    /* the trainer's flat gradient buffer seen through the model's views */
    int64_t n;
    float *g = mw_trainer_grads(t, &n);
    mw_storage *s = mw_storage_wrap(MW_F32, n, g, NULL, NULL);
    mw_weights gw;
    CHECK_OK(mw_weights_over(&gw, m, s));
    int compared = 0;
    for (int i = 0; i < gr.n; i++) {
        const char *name = gr.items[i].name;
        if (strncmp(name, "loss.param.", 11)) continue;
        int pid, layer;
        CHECK_OK(mw_model_param_lookup(m, name + 11, &pid, &layer));
        mw_tensor v;
        if (layer >= 0) CHECK_OK(mw_tensor_select(&v, mw_weights_param(&gw, pid), 0, layer));
        else mw_tensor_share(&v, mw_weights_param(&gw, pid));
        double e = rel_err(&v, &gr.items[i].t);
        CHECK_MSG(e < 1e-4, "%s: d loss / d %s: relative error %.3g", fam, name + 11, e);
        mw_tensor_release(&v);
        compared++;
    }
    /* every parameter of the model has its reference */
    int want = 0;
    for (int pid = 0; pid < MW_PARAM_COUNT; pid++)
        if (mw_model_param_exists(m, pid)) want += mw_param_per_block(pid) ? (int)c.n_layers : 1;
    CHECK_MSG(compared == want, "%s: compared %d parameter gradients of %d", fam, compared, want);
    mw_weights_release(&gw);
    mw_storage_release(s);
done:
    mw_trainer_free(t);
    mw_state_dict_free(&ex);
    mw_state_dict_free(&gr);
}

static void test_gpt_neox(void) { family(FAMILIES[0]); }
static void test_llama(void) { family(FAMILIES[1]); }
static void test_mistral(void) { family(FAMILIES[2]); }
static void test_qwen2(void) { family(FAMILIES[3]); }
static void test_gptj(void) { family(FAMILIES[4]); }

int main(void) {
    RUN(test_gpt_neox);
    RUN(test_llama);
    RUN(test_mistral);
    RUN(test_qwen2);
    RUN(test_gptj);
    MW_TEST_MAIN_END();
}
