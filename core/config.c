/* config.c - mw_config: TransformerLens's defaults, derived fields and checks, once (config.h). */
#include "config.h"

#include <math.h>
#include <stdio.h>
#include <string.h>

#include <cjson/cJSON.h>

#include "mw_tensor.h"

#define CFG_ERR(...) mw_seterr("HookedTransformerConfig: " __VA_ARGS__)

#define MW_X(id, s) s,
static const char *const norm_names[] = {MW_NORM_LIST(MW_X) NULL};
static const char *const pos_names[] = {MW_POS_LIST(MW_X) NULL};
static const char *const act_names[] = {MW_ACT_LIST(MW_X) NULL};
#undef MW_X

/* the enum table and None mapping of each ENUM field; NULL for the other kinds */
#define ENUM_normalization_type norm_names, MW_NORM_NONE
#define ENUM_positional_embedding_type pos_names, -1
#define ENUM_act_fn act_names, MW_ACT_NONE
#define FIELD_INT(f) {#f, MW_CF_INT, offsetof(mw_config, f), NULL, -1},
#define FIELD_BOOL(f) {#f, MW_CF_BOOL, offsetof(mw_config, f), NULL, -1},
#define FIELD_FLOAT(f) {#f, MW_CF_FLOAT, offsetof(mw_config, f), NULL, -1},
#define FIELD_ENUM(f) {#f, MW_CF_ENUM, offsetof(mw_config, f), ENUM_##f},
#define MW_X(f, kind) FIELD_##kind(f)
const mw_config_field mw_config_fields[] = {MW_CONFIG_FIELDS(MW_X){NULL, MW_CF_INT, 0, NULL, -1}};
#undef MW_X

const mw_config_field *mw_config_field_find(const char *name) {
    for (const mw_config_field *f = mw_config_fields; f->name; f++)
        if (strcmp(f->name, name) == 0) return f;
    return NULL;
}

int mw_config_enum_parse(const mw_config_field *f, const char *s) {
    for (int i = 0; f->names[i]; i++)
        if (strcmp(s, f->names[i]) == 0 && (i != f->none_value || f->none_value >= 0)) return i;
    char list[256] = "";
    for (int i = 0; f->names[i]; i++) {
        size_t n = strlen(list);
        snprintf(list + n, sizeof list - n, "%s'%s'", i ? ", " : "", f->names[i]);
    }
    return mw_seterr("HookedTransformerConfig: %s = '%s' is not supported (%s)", f->name, s, list);
}

const char *mw_config_enum_name(const mw_config_field *f, int v) {
    int n = 0;
    while (f->names[n]) n++;
    return v >= 0 && v < n ? f->names[v] : NULL;
}

int64_t mw_config_get_int(const mw_config *c, const mw_config_field *f) {
    const char *p = (const char *)c + f->offset;
    switch (f->kind) {
    case MW_CF_INT: return *(const int64_t *)p;
    case MW_CF_BOOL: return *(const int *)p;
    case MW_CF_ENUM: return *(const int *)p; /* the enums are int-sized (static_assert below) */
    default: return (int64_t)*(const double *)p;
    }
}
double mw_config_get_float(const mw_config *c, const mw_config_field *f) {
    return f->kind == MW_CF_FLOAT ? *(const double *)((const char *)c + f->offset) : (double)mw_config_get_int(c, f);
}
void mw_config_set_int(mw_config *c, const mw_config_field *f, int64_t v) {
    char *p = (char *)c + f->offset;
    switch (f->kind) {
    case MW_CF_INT: *(int64_t *)p = v; break;
    case MW_CF_BOOL: *(int *)p = v != 0; break;
    case MW_CF_ENUM: *(int *)p = (int)v; break;
    default: *(double *)p = (double)v; break;
    }
}
void mw_config_set_float(mw_config *c, const mw_config_field *f, double v) {
    if (f->kind == MW_CF_FLOAT) *(double *)((char *)c + f->offset) = v;
    else mw_config_set_int(c, f, (int64_t)v);
}
int mw_config_set_none(mw_config *c, const mw_config_field *f) {
    switch (f->kind) {
    case MW_CF_ENUM:
        if (f->none_value < 0)
            return CFG_ERR("%s cannot be None (one of: %s)", f->name, mw_config_enum_name(f, 0));
        mw_config_set_int(c, f, f->none_value);
        break;
    case MW_CF_INT: mw_config_set_int(c, f, -1); break;
    case MW_CF_FLOAT: mw_config_set_float(c, f, -1.0); break;
    default: break;
    }
    return 0;
}

_Static_assert(sizeof(mw_norm) == sizeof(int) && sizeof(mw_posemb) == sizeof(int) && sizeof(mw_actfn) == sizeof(int),
               "enum fields are accessed as int");

void mw_config_default(mw_config *c) {
    memset(c, 0, sizeof *c);
    c->n_heads = -1;
    c->d_mlp = -1;
    c->d_vocab_out = -1;
    c->d_vocab = -1;
    c->act_fn = MW_ACT_NONE;
    c->normalization_type = MW_NORM_LN;
    c->positional_embedding_type = MW_POS_STANDARD;
    c->use_attn_scale = 1;
    c->attn_scale = -1.0;
    c->eps = 1e-5;
    c->initializer_range = -1.0;
    c->seed = -1;
    c->rotary_dim = -1;
    c->rotary_base = 10000.0;
    c->n_key_value_heads = -1;
}

static int positive(const char *name, int64_t v) {
    if (v > 0) return 0;
    if (v == 0 || v == -1) return CFG_ERR("%s is required (a positive integer)", name);
    return CFG_ERR("%s must be > 0 (got %lld)", name, (long long)v);
}

int mw_config_finish(mw_config *c) {
    if (positive("d_model", c->d_model) || positive("d_head", c->d_head) || positive("n_layers", c->n_layers) ||
        positive("n_ctx", c->n_ctx))
        return -1;
    if (c->n_heads == -1) {
        if (c->d_model % c->d_head)
            return CFG_ERR("n_heads is unset and d_model %lld is not a multiple of d_head %lld",
                           (long long)c->d_model, (long long)c->d_head);
        c->n_heads = c->d_model / c->d_head;
    }
    if (positive("n_heads", c->n_heads)) return -1;
    if (c->d_vocab != -1 && positive("d_vocab", c->d_vocab)) return -1;
    if (c->d_vocab_out == -1) c->d_vocab_out = c->d_vocab;
    else if (positive("d_vocab_out", c->d_vocab_out)) return -1;
    if ((unsigned)c->act_fn >= MW_ACT_COUNT) return CFG_ERR("act_fn: bad value %d", (int)c->act_fn);
    if ((unsigned)c->normalization_type >= MW_NORM_COUNT)
        return CFG_ERR("normalization_type: bad value %d", (int)c->normalization_type);
    if ((unsigned)c->positional_embedding_type >= MW_POS_COUNT)
        return CFG_ERR("positional_embedding_type: bad value %d", (int)c->positional_embedding_type);
    if (c->attn_only) {
        c->d_mlp = 0; /* TransformerLens keeps a given d_mlp but builds no MLP; so does the model */
    } else {
        if (c->d_mlp == -1) c->d_mlp = 4 * c->d_model;
        if (positive("d_mlp", c->d_mlp)) return -1;
        if (c->act_fn == MW_ACT_NONE) return CFG_ERR("act_fn is required for a model with MLPs (attn_only is false)");
        /* TransformerLens's GatedMLP with solu_ln skips W_in and b_in (post = ln(solu(x @ W_gate)));
         * no released model gates a SoLU, so neither form is taken rather than one half-right */
        if (c->gated_mlp && (c->act_fn == MW_ACT_SOLU || c->act_fn == MW_ACT_SOLU_LN))
            return CFG_ERR("act_fn '%s' with gated_mlp is not supported (SoLU runs in the plain MLP only)",
                           c->act_fn == MW_ACT_SOLU ? "solu" : "solu_ln");
    }
    if (!(c->eps >= 0) || !isfinite(c->eps)) return CFG_ERR("eps must be a finite number >= 0 (got %g)", c->eps);
    /* as TransformerLens: attn_scale stays as given (-1, unused) when use_attn_scale is false */
    if (c->use_attn_scale && c->attn_scale == -1.0) c->attn_scale = sqrt((double)c->d_head);
    else if (c->use_attn_scale && (!(c->attn_scale > 0) || !isfinite(c->attn_scale)))
        return CFG_ERR("attn_scale must be a finite number > 0 (got %g)", c->attn_scale);
    if (c->initializer_range == -1.0) c->initializer_range = 0.8 / sqrt((double)c->d_model);
    else if (!(c->initializer_range >= 0) || !isfinite(c->initializer_range))
        return CFG_ERR("initializer_range must be a finite number >= 0 (got %g)", c->initializer_range);
    if (c->seed < -1) return CFG_ERR("seed must be >= 0 (got %lld)", (long long)c->seed);
    if (c->positional_embedding_type == MW_POS_ROTARY) {
        if (c->rotary_dim == -1) c->rotary_dim = c->d_head;
        if (c->rotary_dim <= 0 || c->rotary_dim > c->d_head || c->rotary_dim % 2)
            return CFG_ERR("rotary_dim must be even and in (0, d_head = %lld] (got %lld)", (long long)c->d_head,
                           (long long)c->rotary_dim);
        if (!(c->rotary_base > 0) || !isfinite(c->rotary_base))
            return CFG_ERR("rotary_base must be a finite number > 0 (got %g)", c->rotary_base);
    }
    if (c->n_key_value_heads == 0) c->n_key_value_heads = -1; /* a zeroed struct: no grouping */
    if (c->n_key_value_heads != -1 &&
        (c->n_key_value_heads <= 0 || c->n_key_value_heads > c->n_heads || c->n_heads % c->n_key_value_heads))
        return CFG_ERR("n_key_value_heads must divide n_heads = %lld (got %lld)", (long long)c->n_heads,
                       (long long)c->n_key_value_heads);
    if (c->final_rms && c->normalization_type != MW_NORM_RMS && c->normalization_type != MW_NORM_RMSPRE)
        return CFG_ERR("final_rms is supported with RMS / RMSPre blocks only");
    return 0;
}

int mw_config_from_json(mw_config *c, const cJSON *obj) {
    mw_config_default(c);
    if (!cJSON_IsObject(obj)) return CFG_ERR("a config must be a JSON object");
    for (const mw_config_field *f = mw_config_fields; f->name; f++) {
        const cJSON *v = cJSON_GetObjectItemCaseSensitive(obj, f->name);
        if (!v) continue;
        int none = cJSON_IsNull(v) || (cJSON_IsString(v) && strcmp(v->valuestring, "None") == 0) ||
                   (cJSON_IsFalse(v) && f->kind != MW_CF_BOOL);
        if (none) {
            if (mw_config_set_none(c, f)) return -1;
            continue;
        }
        switch (f->kind) {
        case MW_CF_INT:
            if (!cJSON_IsNumber(v) || v->valuedouble != floor(v->valuedouble) || fabs(v->valuedouble) > 9007199254740992.0)
                return CFG_ERR("%s must be an integer", f->name);
            mw_config_set_int(c, f, (int64_t)v->valuedouble);
            break;
        case MW_CF_FLOAT:
            if (!cJSON_IsNumber(v)) return CFG_ERR("%s must be a number", f->name);
            mw_config_set_float(c, f, v->valuedouble);
            break;
        case MW_CF_BOOL:
            if (!cJSON_IsBool(v)) return CFG_ERR("%s must be true or false", f->name);
            mw_config_set_int(c, f, cJSON_IsTrue(v));
            break;
        case MW_CF_ENUM: {
            if (!cJSON_IsString(v)) return CFG_ERR("%s must be a string", f->name);
            int e = mw_config_enum_parse(f, v->valuestring);
            if (e < 0) return -1;
            mw_config_set_int(c, f, e);
            break;
        }
        }
    }
    return 0;
}

cJSON *mw_config_to_json(const mw_config *c) {
    cJSON *o = cJSON_CreateObject();
    if (!o) { mw_seterr("config: out of memory"); return NULL; }
    for (const mw_config_field *f = mw_config_fields; f->name; f++) {
        int64_t v = mw_config_get_int(c, f);
        cJSON *item;
        switch (f->kind) {
        case MW_CF_INT:
            item = v == -1 && strcmp(f->name, "d_vocab") && strcmp(f->name, "d_vocab_out") ? cJSON_CreateNull()
                   : !strcmp(f->name, "d_mlp") && c->attn_only ? cJSON_CreateNull()
                                                               : cJSON_CreateNumber((double)v);
            break;
        case MW_CF_BOOL: item = cJSON_CreateBool((int)v); break;
        case MW_CF_FLOAT: item = cJSON_CreateNumber(mw_config_get_float(c, f)); break;
        default:
            item = (int)v == f->none_value ? cJSON_CreateNull() : cJSON_CreateString(mw_config_enum_name(f, (int)v));
            break;
        }
        if (!item || !cJSON_AddItemToObject(o, f->name, item)) {
            cJSON_Delete(item);
            cJSON_Delete(o);
            mw_seterr("config: out of memory");
            return NULL;
        }
    }
    return o;
}
