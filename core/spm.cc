// spm.cc - the C interface of spm.h over sentencepiece::SentencePieceProcessor. No exception
// leaves this file: each function catches them (out of memory) and reports an error.
#include "spm.h"

#include <sentencepiece_processor.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <new>
#include <string>
#include <vector>

struct mw_spm {
    sentencepiece::SentencePieceProcessor sp;
};

static int fail(char *err, size_t errlen, const std::string &msg) {
    snprintf(err, errlen, "%s", msg.c_str());
    return -1;
}

extern "C" int mw_spm_load(mw_spm **out, const char *data, size_t len, char *err, size_t errlen) {
    *out = nullptr;
    try {
        mw_spm *s = new mw_spm;
        auto st = s->sp.LoadFromSerializedProto(std::string(data, len));
        if (!st.ok() || s->sp.GetPieceSize() <= 0) {
            std::string why = st.ok() ? "the model has no pieces" : st.ToString();
            delete s;
            return fail(err, errlen, "not a SentencePiece model: " + why);
        }
        *out = s;
        return 0;
    } catch (...) {
        return fail(err, errlen, "out of memory");
    }
}

extern "C" void mw_spm_free(mw_spm *s) { delete s; }

extern "C" int mw_spm_size(const mw_spm *s) { return s->sp.GetPieceSize(); }

extern "C" const char *mw_spm_piece(const mw_spm *s, int id, size_t *len) {
    const std::string &p = s->sp.IdToPiece(id);
    *len = p.size();
    return p.c_str();
}

extern "C" int mw_spm_is_special(const mw_spm *s, int id) {
    return s->sp.IsControl(id) || s->sp.IsUnknown(id);
}

extern "C" void mw_spm_special_ids(const mw_spm *s, int *bos, int *eos, int *pad, int *unk) {
    *bos = s->sp.bos_id();
    *eos = s->sp.eos_id();
    *pad = s->sp.pad_id();
    *unk = s->sp.unk_id();
}

extern "C" int mw_spm_encode(const mw_spm *s, const char *text, size_t len, int64_t **ids, size_t *n, char *err,
                             size_t errlen) {
    *ids = nullptr;
    *n = 0;
    try {
        std::vector<int> v;
        auto st = s->sp.Encode(std::string(text ? text : "", len), &v);
        if (!st.ok()) return fail(err, errlen, st.ToString());
        int64_t *p = static_cast<int64_t *>(malloc((v.size() + 1) * sizeof *p));
        if (!p) return fail(err, errlen, "out of memory");
        for (size_t i = 0; i < v.size(); i++) p[i] = v[i];
        *ids = p;
        *n = v.size();
        return 0;
    } catch (...) {
        return fail(err, errlen, "out of memory");
    }
}

extern "C" int mw_spm_decode(const mw_spm *s, const int64_t *ids, size_t n, char **text, size_t *len, char *err,
                             size_t errlen) {
    *text = nullptr;
    *len = 0;
    try {
        std::vector<int> v(ids, ids + n);
        std::string out;
        auto st = s->sp.Decode(v, &out);
        if (!st.ok()) return fail(err, errlen, st.ToString());
        char *p = static_cast<char *>(malloc(out.size() + 1));
        if (!p) return fail(err, errlen, "out of memory");
        memcpy(p, out.data(), out.size());
        p[out.size()] = 0;
        *text = p;
        *len = out.size();
        return 0;
    } catch (...) {
        return fail(err, errlen, "out of memory");
    }
}
