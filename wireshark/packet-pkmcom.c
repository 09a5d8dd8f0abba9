/* SPDX-License-Identifier: MIT */
/* Wireshark 4.0 plugin: a dissector for PkmCom/TCP. Shows the handshake in the clear and, with a
 * key log (docs/PROTOCOL.md section 10), decrypts every packet, following re-establishments. */
#define WS_BUILD_DLL
#include <string.h>
#include <sys/stat.h>
#include <wireshark.h>
#include <epan/conversation.h>
#include <epan/expert.h>
#include <epan/packet.h>
#include <epan/prefs.h>
#include <epan/proto.h>
#include <epan/proto_data.h>
#include <epan/tvbuff.h>
#include <ws_version.h>
#include "pkmcom/describe.h"
#include "pkmcom/keylog.h"

#ifndef PKMCOM_PLUGIN_VERSION
#define PKMCOM_PLUGIN_VERSION "0.1.0"
#endif

WS_DLL_PUBLIC_DEF const gchar plugin_version[] = PKMCOM_PLUGIN_VERSION;
WS_DLL_PUBLIC_DEF const int plugin_want_major = WIRESHARK_VERSION_MAJOR;
WS_DLL_PUBLIC_DEF const int plugin_want_minor = WIRESHARK_VERSION_MINOR;
WS_DLL_PUBLIC void plugin_register(void);

#define KEYSHARE_LEN 528
#define RSA_CT       256

static int proto_pkmcom = -1;
static dissector_handle_t pkmcom_handle;

static int hf_key_kind = -1;
static int hf_key_len = -1;
static int hf_key_der = -1;
static int hf_key_fp = -1;
static int hf_ks_ct1 = -1;
static int hf_ks_ct2 = -1;
static int hf_ks_iv = -1;
static int hf_ks_keys = -1;
static int hf_ks_rekey = -1;
static int hf_rec_len = -1;
static int hf_ciphertext = -1;
static int hf_encrypted = -1;
static int hf_id = -1;
static int hf_name = -1;
static int hf_hash = -1;
static int hf_hash_good = -1;
static int hf_size = -1;
static int hf_content = -1;
static int hf_padding = -1;
static int hf_padding_good = -1;
static int hf_field = -1;
static int hf_field_name = -1;
static int hf_field_value = -1;
static int hf_confirm = -1;

static gint ett_pkmcom = -1;
static gint ett_unit = -1;
static gint ett_packet = -1;
static gint ett_field = -1;

static expert_field ei_padding = EI_INIT;
static expert_field ei_size = EI_INIT;
static expert_field ei_hash = EI_INIT;
static expert_field ei_content = EI_INIT;
static expert_field ei_nokeys = EI_INIT;
static expert_field ei_encrypted = EI_INIT;
static expert_field ei_keylog = EI_INIT;

static const char *pref_keylog_file = NULL;
static guint pref_max_size = PKM_DEFAULT_MAX_SIZE;

/* The key log loaded at the start of each dissection run, and why not. */
static pkm_keylog_t *keylog = NULL;
static int keylog_error = 0;

/* Every decoder made during a run (freed at cleanup). */
static GPtrArray *decoders = NULL;
/* Key logs replaced by a newer reading of the file (decoders may still borrow entries). */
static GPtrArray *old_keylogs = NULL;
static struct stat keylog_stat;
static guint32 last_frame_checked = 0;

typedef struct {
    address srv_addr;
    guint32 srv_port;
    gboolean srv_known;
    pkm_streamdec_t *dec[2]; /* [0] client to server, [1] server to client; first pass only */
} conv_data_t;

/* One unit (or one request for more bytes) met in a frame, recorded on the first pass so that
 * later passes show the same without the decoders. */
enum { U_DESEG = 0 };
typedef struct unit_rec {
    guint32 off, tvb_len; /* where it was met: offset in a tvb of this length */
    int kind;             /* U_DESEG or a pkm_unit_kind */
    guint32 len;          /* the unit's length, or for U_DESEG how many more bytes */
    int dir;
    int err;
    gboolean entry_found;
    gboolean rekey;
    guint32 id, hash, size, pad_len;
    guint8 *plain; /* RECORD: the plaintext, file scope */
    struct unit_rec *next;
} unit_rec_t;

static const value_string dir_names[] = {
    {PKM_DIR_C2S, "client to server"},
    {PKM_DIR_S2C, "server to client"},
    {0, NULL},
};

/* ---- the key log, per run ---- */

static void pkmcom_init(void)
{
    keylog_error = 0;
    memset(&keylog_stat, 0, sizeof keylog_stat);
    last_frame_checked = 0;
    if (pref_keylog_file && *pref_keylog_file) {
        size_t bad = 0;
        if (stat(pref_keylog_file, &keylog_stat) != 0) memset(&keylog_stat, 0, sizeof keylog_stat);
        keylog_error = pkm_keylog_load(pref_keylog_file, &keylog, &bad);
    }
    decoders = g_ptr_array_new();
    old_keylogs = g_ptr_array_new();
}

/* During a live capture the key log grows as sessions start: read it again when it changed
 * (checked once per new frame on the first pass), and hand it to every decoder. */
static void maybe_reload_keylog(packet_info *pinfo)
{
    if (!pref_keylog_file || !*pref_keylog_file || pinfo->num == last_frame_checked) return;
    last_frame_checked = pinfo->num;
    struct stat st;
    if (stat(pref_keylog_file, &st) != 0) return;
    if (st.st_size == keylog_stat.st_size && st.st_mtime == keylog_stat.st_mtime &&
        st.st_ino == keylog_stat.st_ino)
        return;
    pkm_keylog_t *kl = NULL;
    size_t bad = 0;
    if (pkm_keylog_load(pref_keylog_file, &kl, &bad) < 0) return;
    keylog_stat = st;
    keylog_error = 0;
    if (keylog && old_keylogs)
        g_ptr_array_add(old_keylogs, keylog);
    else
        pkm_keylog_free(keylog);
    keylog = kl;
    for (guint i = 0; decoders && i < decoders->len; i++)
        pkm_streamdec_set_keylog(g_ptr_array_index(decoders, i), keylog);
}

static void pkmcom_cleanup(void)
{
    if (decoders) {
        for (guint i = 0; i < decoders->len; i++)
            pkm_streamdec_free(g_ptr_array_index(decoders, i));
        g_ptr_array_free(decoders, TRUE);
        decoders = NULL;
    }
    pkm_keylog_free(keylog);
    keylog = NULL;
    if (old_keylogs) {
        for (guint i = 0; i < old_keylogs->len; i++)
            pkm_keylog_free(g_ptr_array_index(old_keylogs, i));
        g_ptr_array_free(old_keylogs, TRUE);
        old_keylogs = NULL;
    }
}

/* ---- helpers ---- */

static conv_data_t *get_conv(packet_info *pinfo, tvbuff_t *tvb, int *dir)
{
    conversation_t *conv = find_or_create_conversation(pinfo);
    conv_data_t *cd = conversation_get_proto_data(conv, proto_pkmcom);
    if (!cd) {
        cd = wmem_new0(wmem_file_scope(), conv_data_t);
        conversation_add_proto_data(conv, proto_pkmcom, cd);
    }
    if (!cd->srv_known && !PINFO_FD_VISITED(pinfo)) {
        /* The server speaks first (its ServerKey); a stream that starts with a ClientKey right
         * after the ServerKey was missed cannot be told apart, so the first sender is the
         * server. */
        (void)tvb;
        copy_address_wmem(wmem_file_scope(), &cd->srv_addr, &pinfo->src);
        cd->srv_port = pinfo->srcport;
        cd->srv_known = TRUE;
    }
    *dir = cd->srv_known && pinfo->srcport == cd->srv_port &&
                   addresses_equal(&pinfo->src, &cd->srv_addr)
               ? PKM_DIR_S2C
               : PKM_DIR_C2S;
    return cd;
}

static unit_rec_t *find_rec(packet_info *pinfo, guint32 off, guint32 tvb_len)
{
    for (unit_rec_t *u = p_get_proto_data(wmem_file_scope(), pinfo, proto_pkmcom, 0); u;
         u = u->next)
        if (u->off == off && u->tvb_len == tvb_len) return u;
    return NULL;
}

static void add_rec(packet_info *pinfo, unit_rec_t *u)
{
    u->next = p_get_proto_data(wmem_file_scope(), pinfo, proto_pkmcom, 0);
    p_add_proto_data(wmem_file_scope(), pinfo, proto_pkmcom, 0, u);
}

/* First pass: what the decoder makes of the bytes at offset. */
static unit_rec_t *compute(conv_data_t *cd, int dir, tvbuff_t *tvb, guint32 off, guint32 tvb_len)
{
    unit_rec_t *u = wmem_new0(wmem_file_scope(), unit_rec_t);
    u->off = off;
    u->tvb_len = tvb_len;
    u->dir = dir;
    pkm_streamdec_t **dp = &cd->dec[dir == PKM_DIR_C2S ? 0 : 1];
    if (!*dp) {
        if (pkm_streamdec_new(keylog, dir, pref_max_size, dp) < 0) *dp = NULL;
        if (*dp && decoders) g_ptr_array_add(decoders, *dp);
    }
    guint32 avail = tvb_captured_length_remaining(tvb, off);
    const guint8 *p = tvb_get_ptr(tvb, off, avail);
    if (!*dp) {
        u->kind = PKM_UNIT_OPAQUE;
        u->len = avail;
        return u;
    }
    size_t need = 0, len = pkm_streamdec_next_len(*dp, p, avail, &need);
    if (len == 0 || len > avail) {
        u->kind = U_DESEG;
        u->len = (guint32)((len ? len : need) - avail);
        return u;
    }
    pkm_unit_t unit;
    guint8 *plain = wmem_alloc(wmem_file_scope(), len);
    if (pkm_streamdec_take(*dp, p, len, plain, &unit) < 0) {
        u->kind = PKM_UNIT_OPAQUE;
        u->len = avail;
        return u;
    }
    u->kind = unit.kind;
    u->len = (guint32)len;
    u->err = unit.err;
    u->entry_found = unit.entry != NULL;
    u->rekey = unit.rekey != 0;
    if (unit.kind == PKM_UNIT_RECORD) {
        u->plain = plain;
        u->id = unit.pkt.id;
        u->hash = unit.pkt.hash;
        u->size = (guint32)unit.pkt.size;
        u->pad_len = (guint32)unit.pad_len;
    }
    return u;
}

static gchar *fingerprint(const guint8 *der, gsize n)
{
    guint8 digest[32];
    gsize dlen = sizeof digest;
    GChecksum *c = g_checksum_new(G_CHECKSUM_SHA256);
    g_checksum_update(c, der, n);
    g_checksum_get_digest(c, digest, &dlen);
    g_checksum_free(c);
    gchar *b64 = g_base64_encode(digest, dlen);
    gsize l = strlen(b64);
    while (l && b64[l - 1] == '=')
        b64[--l] = '\0';
    gchar *fp = wmem_strdup_printf(wmem_packet_scope(), "SHA256:%s", b64);
    g_free(b64);
    return fp;
}

typedef struct {
    proto_tree *tree;
    tvbuff_t *tvb;
    packet_info *pinfo;
    wmem_strbuf_t *info;
} fields_ctx_t;

static void add_field(void *ctx, size_t index, const char *name, const char *text)
{
    fields_ctx_t *f = ctx;
    const char *both = wmem_strdup_printf(wmem_packet_scope(), "%s: %s", name, text);
    proto_item *it = proto_tree_add_string(f->tree, hf_field, f->tvb, 0, 0, both);
    proto_item_set_generated(it);
    proto_tree *st = proto_item_add_subtree(it, ett_field);
    proto_item_set_generated(proto_tree_add_string(st, hf_field_name, f->tvb, 0, 0, name));
    proto_item_set_generated(proto_tree_add_string(st, hf_field_value, f->tvb, 0, 0, text));
    if (index < 3) wmem_strbuf_append_printf(f->info, "%s%s=%s", index ? ", " : ": ", name, text);
}

static void show_record(tvbuff_t *tvb, packet_info *pinfo, proto_tree *tree, proto_item *ti,
                        const unit_rec_t *u)
{
    tvbuff_t *ptvb = tvb_new_child_real_data(tvb, u->plain, u->len, u->len);
    add_new_data_source(pinfo, ptvb, "Decrypted PkmCom");
    proto_tree *pt =
        proto_tree_add_subtree(tree, ptvb, 0, u->len, ett_packet, NULL, "Packet (decrypted)");
    proto_tree_add_item(pt, hf_id, ptvb, 0, 1, ENC_BIG_ENDIAN);
    proto_item *hi = proto_tree_add_item(pt, hf_hash, ptvb, 1, 4, ENC_BIG_ENDIAN);
    proto_item *si = proto_tree_add_item(pt, hf_size, ptvb, 5, 4, ENC_BIG_ENDIAN);
    if (u->err == PKM_ETOOBIG || u->err == PKM_ENEGLEN) {
        expert_add_info_format(pinfo, si, &ei_size,
                               "Size %d is %s: the rest of this direction cannot be followed",
                               (gint32)tvb_get_ntohl(ptvb, 5),
                               u->err == PKM_ENEGLEN ? "negative"
                                                     : "over the limit (pref "
                                                       "pkmcom.max_size)");
        col_append_sep_str(pinfo->cinfo, COL_INFO, ", ", "Bad Size");
        return;
    }
    if (u->size) proto_tree_add_item(pt, hf_content, ptvb, 9, u->size, ENC_NA);
    proto_item *padi = proto_tree_add_item(pt, hf_padding, ptvb, 9 + u->size, u->pad_len, ENC_NA);
    proto_item_set_generated(
        proto_tree_add_boolean(pt, hf_padding_good, ptvb, 9 + u->size, u->pad_len, u->err == 0));
    if (u->err == PKM_EPADDING)
        expert_add_info_format(pinfo, padi, &ei_padding,
                               "Bad PKCS#7 padding: a receiver closes the connection");

    if (u->id == PKM_HANDSHAKE_ID) {
        proto_item_set_generated(proto_tree_add_boolean(pt, hf_confirm, ptvb, 0, u->len, TRUE));
        proto_item_append_text(ti, ": 0xFF confirmation");
        col_append_sep_str(pinfo->cinfo, COL_INFO, ", ", "Confirmation (0xFF)");
        return;
    }
    pkm_packet_t pkt = {
        .id = (uint8_t)u->id, .hash = u->hash, .content = u->plain + 9, .size = u->size};
    fields_ctx_t fc = {pt, ptvb, pinfo, wmem_strbuf_new(wmem_packet_scope(), "")};
    const pkm_cmpl_packet_t *cp = NULL;
    int r = pkm_describe_cmpl(&pkt, add_field, &fc, &cp);
    const char *name = cp ? cp->name : "unknown";
    proto_item_set_generated(proto_tree_add_string(pt, hf_name, ptvb, 0, 1, name));
    if (r != PKM_EUNKNOWNID) {
        proto_item *gi = proto_tree_add_boolean(pt, hf_hash_good, ptvb, 1, 4, r == 0);
        proto_item_set_generated(gi);
        if (r == PKM_EHASH)
            expert_add_info_format(pinfo, hi, &ei_hash,
                                   "Hash 0x%08x does not check against the %s schema", u->hash,
                                   name);
        else if (r < 0)
            expert_add_info_format(pinfo, pt, &ei_content, "Content does not decode as %s: %s",
                                   name, pkm_strerror(r));
    }
    proto_item_append_text(ti, ": 0x%02x %s, Size %u", u->id, name, u->size);
    col_append_sep_fstr(pinfo->cinfo, COL_INFO, ", ", "0x%02x %s%s", u->id, name,
                        wmem_strbuf_get_str(fc.info));
}

static void show_unit(tvbuff_t *tvb, packet_info *pinfo, proto_tree *tree, guint32 off,
                      const unit_rec_t *u)
{
    proto_item *ti;
    proto_tree *ut;
    switch (u->kind) {
    case PKM_UNIT_KEY: {
        const char *kind = u->dir == PKM_DIR_S2C ? "ServerKey" : "ClientKey";
        ut = proto_tree_add_subtree(tree, tvb, off, u->len, ett_unit, &ti, kind);
        proto_item_set_generated(proto_tree_add_string(ut, hf_key_kind, tvb, off, u->len, kind));
        proto_tree_add_item(ut, hf_key_len, tvb, off, 4, ENC_BIG_ENDIAN);
        proto_tree_add_item(ut, hf_key_der, tvb, off + 4, u->len - 4, ENC_NA);
        gchar *fp = fingerprint(tvb_get_ptr(tvb, off + 4, u->len - 4), u->len - 4);
        proto_item_set_generated(
            proto_tree_add_string(ut, hf_key_fp, tvb, off + 4, u->len - 4, fp));
        proto_item_append_text(ti, " (%u bytes of DER), %s", u->len - 4, fp);
        col_append_sep_str(pinfo->cinfo, COL_INFO, ", ", kind);
        break;
    }
    case PKM_UNIT_KEYSHARE:
        ut = proto_tree_add_subtree(tree, tvb, off, u->len, ett_unit, &ti, "KeyShare");
        proto_tree_add_item(ut, hf_ks_ct1, tvb, off, RSA_CT, ENC_NA);
        proto_tree_add_item(ut, hf_ks_ct2, tvb, off + RSA_CT, RSA_CT, ENC_NA);
        proto_tree_add_item(ut, hf_ks_iv, tvb, off + 2 * RSA_CT, 16, ENC_NA);
        proto_item_set_generated(
            proto_tree_add_boolean(ut, hf_ks_rekey, tvb, off, u->len, u->rekey));
        proto_item *ki =
            proto_tree_add_boolean(ut, hf_ks_keys, tvb, off + 2 * RSA_CT, 16, u->entry_found);
        proto_item_set_generated(ki);
        if (!u->entry_found) {
            if (!keylog)
                expert_add_info_format(pinfo, ki, &ei_keylog,
                                       keylog_error ? "Key log %s cannot be read: nothing is "
                                                      "decrypted"
                                                    : "No key log (pref pkmcom.keylog_file): "
                                                      "nothing is decrypted",
                                       pref_keylog_file);
            else
                expert_add_info_format(pinfo, ki, &ei_nokeys,
                                       "No key-log line matches this KeyShare's IV: %s is not "
                                       "decrypted",
                                       val_to_str_const(u->dir, dir_names, "?"));
        }
        proto_item_append_text(ti, "%s (%s)%s", u->rekey ? " (re-establishment)" : "",
                               val_to_str_const(u->dir, dir_names, "?"),
                               u->entry_found ? ", keys from the key log" : ", no keys");
        col_append_sep_str(pinfo->cinfo, COL_INFO, ", ",
                           u->rekey ? "KeyShare (re-establishment)" : "KeyShare");
        break;
    case PKM_UNIT_RECORD:
        ut = proto_tree_add_subtree(tree, tvb, off, u->len, ett_unit, &ti, "Record");
        proto_item_set_generated(proto_tree_add_uint(ut, hf_rec_len, tvb, off, u->len, u->len));
        proto_tree_add_item(ut, hf_ciphertext, tvb, off, u->len, ENC_NA);
        show_record(tvb, pinfo, ut, ti, u);
        break;
    default:
        ut = proto_tree_add_subtree(tree, tvb, off, u->len, ett_unit, &ti, "Encrypted data");
        proto_item *ei = proto_tree_add_item(ut, hf_encrypted, tvb, off, u->len, ENC_NA);
        proto_item_append_text(ti, " (%u bytes; record boundaries unknown without keys)", u->len);
        expert_add_info_format(pinfo, ei, &ei_encrypted, "Encrypted, not decrypted (%u bytes): %s",
                               u->len,
                               u->err == PKM_EHANDSHAKE || u->err == 0
                                   ? "no key-log line for this direction's KeyShare"
                                   : "lost track after a bad record header");
        col_append_sep_fstr(pinfo->cinfo, COL_INFO, ", ", "Encrypted data (%u bytes)", u->len);
        break;
    }
}

static int dissect_pkmcom(tvbuff_t *tvb, packet_info *pinfo, proto_tree *tree, void *data _U_)
{
    col_set_str(pinfo->cinfo, COL_PROTOCOL, "PkmCom");
    int dir;
    conv_data_t *cd = get_conv(pinfo, tvb, &dir);
    /* Called twice for one frame (the end of a reassembled PDU, then what follows it), TCP has
     * fenced the column after the first call: go on after it rather than clearing. */
    const char *info = col_get_text(pinfo->cinfo, COL_INFO);
    if (!info || (strncmp(info, "C->S", 4) != 0 && strncmp(info, "S->C", 4) != 0)) {
        col_clear(pinfo->cinfo, COL_INFO);
        col_add_str(pinfo->cinfo, COL_INFO, dir == PKM_DIR_C2S ? "C->S" : "S->C");
    }
    guint32 total = tvb_captured_length(tvb);
    proto_item *ti = proto_tree_add_item(tree, proto_pkmcom, tvb, 0, -1, ENC_NA);
    proto_tree *pt = proto_item_add_subtree(ti, ett_pkmcom);
    proto_item_append_text(ti, ", %s", val_to_str_const(dir, dir_names, "?"));
    guint32 off = 0;
    while (off < total) {
        unit_rec_t *u = find_rec(pinfo, off, total);
        if (!u) {
            if (PINFO_FD_VISITED(pinfo)) break;
            maybe_reload_keylog(pinfo);
            u = compute(cd, dir, tvb, off, total);
            add_rec(pinfo, u);
        }
        if (u->kind == U_DESEG) {
            pinfo->desegment_offset = off;
            pinfo->desegment_len = u->len;
            return total;
        }
        show_unit(tvb, pinfo, pt, off, u);
        off += u->len;
    }
    return total;
}

/* A TCP stream that starts with the ServerKey of an RSA-2048 key (Int 294, then the DER prefix
 * of a 2048-bit rsaEncryption SubjectPublicKeyInfo) is PkmCom/TCP, whatever the port. */
static gboolean dissect_pkmcom_heur(tvbuff_t *tvb, packet_info *pinfo, proto_tree *tree, void *data)
{
    static const guint8 sig[] = {0x00, 0x00, 0x01, 0x26, 0x30, 0x82, 0x01, 0x22, 0x30, 0x0d, 0x06,
                                 0x09, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x01};
    if (tvb_captured_length(tvb) < sizeof sig || tvb_memeql(tvb, 0, sig, sizeof sig) != 0)
        return FALSE;
    conversation_t *conv = find_or_create_conversation(pinfo);
    conversation_set_dissector(conv, pkmcom_handle);
    dissect_pkmcom(tvb, pinfo, tree, data);
    return TRUE;
}

static void proto_register_pkmcom(void)
{
    static hf_register_info hf[] = {
        {&hf_key_kind,
         {"Key message", "pkmcom.key.kind", FT_STRING, BASE_NONE, NULL, 0, "ServerKey or ClientKey",
          HFILL}},
        {&hf_key_len,
         {"Key length", "pkmcom.key.length", FT_INT32, BASE_DEC, NULL, 0,
          "Length of the DER that follows", HFILL}},
        {&hf_key_der,
         {"Public key (DER SubjectPublicKeyInfo)", "pkmcom.key.der", FT_BYTES, BASE_NONE, NULL, 0,
          NULL, HFILL}},
        {&hf_key_fp,
         {"Fingerprint", "pkmcom.key.fingerprint", FT_STRING, BASE_NONE, NULL, 0,
          "SHA256: and the unpadded base64 of SHA-256 over the DER", HFILL}},
        {&hf_ks_ct1,
         {"Ciphertext 1 (M, first half)", "pkmcom.keyshare.ct1", FT_BYTES, BASE_NONE, NULL, 0, NULL,
          HFILL}},
        {&hf_ks_ct2,
         {"Ciphertext 2 (M, second half)", "pkmcom.keyshare.ct2", FT_BYTES, BASE_NONE, NULL, 0,
          NULL, HFILL}},
        {&hf_ks_iv,
         {"IV", "pkmcom.keyshare.iv", FT_BYTES, BASE_NONE, NULL, 0, "This side's IV, in the clear",
          HFILL}},
        {&hf_ks_keys,
         {"Keys found in the key log", "pkmcom.keyshare.keys_found", FT_BOOLEAN, BASE_NONE, NULL, 0,
          NULL, HFILL}},
        {&hf_ks_rekey,
         {"Re-establishment", "pkmcom.keyshare.rekey", FT_BOOLEAN, BASE_NONE, NULL, 0,
          "A KeyShare between records", HFILL}},
        {&hf_rec_len,
         {"Record length", "pkmcom.record.length", FT_UINT32, BASE_DEC, NULL, 0,
          "Bytes on the wire: ((9 + Size) / 16 + 1) * 16", HFILL}},
        {&hf_ciphertext,
         {"Ciphertext", "pkmcom.record.ciphertext", FT_BYTES, BASE_NONE, NULL, 0, NULL, HFILL}},
        {&hf_encrypted,
         {"Encrypted data", "pkmcom.encrypted", FT_BYTES, BASE_NONE, NULL, 0,
          "Ciphertext that cannot be decrypted", HFILL}},
        {&hf_id, {"Id", "pkmcom.id", FT_UINT8, BASE_HEX, NULL, 0, NULL, HFILL}},
        {&hf_name,
         {"Packet", "pkmcom.name", FT_STRING, BASE_NONE, NULL, 0,
          "The Complete Definition's name for the id", HFILL}},
        {&hf_hash, {"Hash", "pkmcom.hash", FT_UINT32, BASE_HEX, NULL, 0, NULL, HFILL}},
        {&hf_hash_good,
         {"Hash checks", "pkmcom.hash.good", FT_BOOLEAN, BASE_NONE, NULL, 0,
          "Present where the Complete Definition gives the schema", HFILL}},
        {&hf_size, {"Size", "pkmcom.size", FT_INT32, BASE_DEC, NULL, 0, NULL, HFILL}},
        {&hf_content, {"Content", "pkmcom.content", FT_BYTES, BASE_NONE, NULL, 0, NULL, HFILL}},
        {&hf_padding, {"Padding", "pkmcom.padding", FT_BYTES, BASE_NONE, NULL, 0, "PKCS#7", HFILL}},
        {&hf_padding_good,
         {"Padding valid", "pkmcom.padding.good", FT_BOOLEAN, BASE_NONE, NULL, 0, NULL, HFILL}},
        {&hf_field,
         {"Field", "pkmcom.field", FT_STRING, BASE_NONE, NULL, 0,
          "A Complete Definition field, decoded", HFILL}},
        {&hf_field_name, {"Name", "pkmcom.field.name", FT_STRING, BASE_NONE, NULL, 0, NULL, HFILL}},
        {&hf_field_value,
         {"Value", "pkmcom.field.value", FT_STRING, BASE_NONE, NULL, 0, NULL, HFILL}},
        {&hf_confirm,
         {"Handshake confirmation", "pkmcom.confirmation", FT_BOOLEAN, BASE_NONE, NULL, 0,
          "The 0xFF packet", HFILL}},
    };
    static gint *ett[] = {&ett_pkmcom, &ett_unit, &ett_packet, &ett_field};
    static ei_register_info ei[] = {
        {&ei_padding,
         {"pkmcom.padding.bad", PI_MALFORMED, PI_ERROR, "Bad PKCS#7 padding", EXPFILL}},
        {&ei_size,
         {"pkmcom.size.bad", PI_MALFORMED, PI_ERROR, "Size negative or over the limit", EXPFILL}},
        {&ei_hash, {"pkmcom.hash.bad", PI_CHECKSUM, PI_ERROR, "Hash does not check", EXPFILL}},
        {&ei_content,
         {"pkmcom.content.bad", PI_MALFORMED, PI_ERROR, "Content does not decode as its schema",
          EXPFILL}},
        {&ei_nokeys,
         {"pkmcom.keys.missing", PI_UNDECODED, PI_WARN, "No key-log line matches this KeyShare",
          EXPFILL}},
        {&ei_encrypted,
         {"pkmcom.encrypted.undecrypted", PI_UNDECODED, PI_NOTE, "Encrypted data not decrypted",
          EXPFILL}},
        {&ei_keylog, {"pkmcom.keylog.none", PI_UNDECODED, PI_NOTE, "No usable key log", EXPFILL}},
    };
    proto_pkmcom = proto_register_protocol("PkmCom/TCP", "PkmCom", "pkmcom");
    proto_register_field_array(proto_pkmcom, hf, array_length(hf));
    proto_register_subtree_array(ett, array_length(ett));
    expert_module_t *em = expert_register_protocol(proto_pkmcom);
    expert_register_field_array(em, ei, array_length(ei));
    module_t *m = prefs_register_protocol(proto_pkmcom, NULL);
    prefs_register_filename_preference(
        m, "keylog_file", "Key log file",
        "PKMCOM_KEYS_V2 lines (PKMCOM_KEYLOGFILE, docs/PROTOCOL.md section 10): whoever holds "
        "this file can read the sessions it lists",
        &pref_keylog_file, FALSE);
    prefs_register_uint_preference(m, "max_size", "Largest packet Size",
                                   "A record whose header gives a larger Size is reported and "
                                   "ends the decryption of its direction (default 1 MiB)",
                                   10, &pref_max_size);
    pkmcom_handle = register_dissector("pkmcom", dissect_pkmcom, proto_pkmcom);
    register_init_routine(pkmcom_init);
    register_cleanup_routine(pkmcom_cleanup);
}

static void proto_reg_handoff_pkmcom(void)
{
    dissector_add_uint_range_with_preference("tcp.port", "", pkmcom_handle);
    heur_dissector_add("tcp", dissect_pkmcom_heur, "PkmCom/TCP over TCP", "pkmcom_tcp",
                       proto_pkmcom, HEURISTIC_ENABLE);
}

void plugin_register(void)
{
    static proto_plugin plug;
    plug.register_protoinfo = proto_register_pkmcom;
    plug.register_handoff = proto_reg_handoff_pkmcom;
    proto_register_plugin(&plug);
}
