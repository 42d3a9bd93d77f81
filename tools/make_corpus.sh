#!/bin/sh
# make_corpus.sh - builds the English training corpus of miwb's bundled models from Debian packages.
#
#   sh tools/make_corpus.sh [OUTDIR]        (default data/corpus; data/ is not committed)
#
# Installs the text packages below when missing (apt-get, as root or through sudo), extracts plain
# text from each, cuts it into documents of about 2-4 KB (whole paragraphs, never split inside one),
# and writes every 20th document to the validation split:
#   OUTDIR/train.txt, OUTDIR/valid.txt   documents separated by a line "<|endoftext|>"
#   OUTDIR/SOURCES                       bytes per source, for the model card
# Sources (all free to redistribute; see each package's copyright file):
#   bible-kjv-text (KJV, public domain), sword-text-web + diatheke (World English Bible, public
#   domain), dict-gcide (GCIDE: Webster 1913 + WordNet, GPL), dict-foldoc (FOLDOC, GFDL),
#   dict-devil (The Devil's Dictionary, public domain), jargon-text (Jargon File, public domain),
#   fortunes + fortunes-min (BSD fortune cookies), wordnet-base (WordNet 3.0 glosses, WordNet licence).
# The output is deterministic: the same packages give the same bytes.
set -eu
OUT=${1:-data/corpus}
PKGS="bible-kjv-text sword-text-web diatheke dict-gcide dict-foldoc dict-devil jargon-text fortunes fortunes-min wordnet-base"

missing=""
for p in $PKGS; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" || missing="$missing $p"
done
if [ -n "$missing" ]; then
  echo "make_corpus: installing:$missing"
  SUDO=$( [ "$(id -u)" = 0 ] || echo sudo )
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq $missing >/dev/null
fi

mkdir -p "$OUT/raw"
RAW=$OUT/raw

# KJV: the `bible` program prints chapter headings and numbered, wrapped verses. Drop the verse
# numbers and re-join the wrapped lines so a chapter becomes one paragraph per verse.
bible -l100000 "Gen1:1-Rev22:21" | sed -e 's/^ *[0-9][0-9]* //' > "$RAW/kjv.txt"

# WEB through diatheke: "-o n" prints Strong's numbers as " <H1234>" after words (without it the
# plain filter glues words together), so ask for them and strip them; drop "Book c:v: " prefixes.
diatheke -b engWEB2015eb -o n -f plain -k "Gen 1:1-Rev 22:21" \
  | sed -e 's/ *<[HG][0-9]*>//g' -e 's/^[1-3]\{0,1\} \{0,1\}[A-Z][A-Za-z ]*[0-9]*:[0-9]*: //' \
  | grep -v '^(engWEB2015eb)$' > "$RAW/web.txt"

# dictd databases: drop the 00-database-* header entries, keep the rest as written.
for d in gcide foldoc devil; do
  zcat "/usr/share/dictd/$d.dict.dz" | awk '
    /^00-?database/ { skip = 1; next }
    /^[^ \t]/ { skip = 0 }
    !skip' > "$RAW/$d.txt"
done

zcat /usr/share/doc/jargon-text/jargon.txt.gz > "$RAW/jargon.txt"

# fortune files: cookies separated by "%" lines; skip the ASCII-art ones.
for f in /usr/share/games/fortunes/*; do
  case "$f" in *.dat|*.u8|*art*) continue ;; esac
  [ -f "$f" ] && sed -e 's/^%$//' "$f"
done > "$RAW/fortunes.txt"

# WordNet: the gloss is what follows " | " on each synset line of data.*; one paragraph each.
for pos in noun verb adj adv; do
  grep -v '^  ' "/usr/share/wordnet/data.$pos" | sed -n 's/^.* | \(.*\)$/\1/p' | sed -e 's/ *$//' -e 'G'
done > "$RAW/wordnet.txt"

# Cut into documents and split. Paragraphs (blank-line separated) are gathered until a document
# holds >= 2048 bytes; document k (over all sources, in order) goes to valid when k % 20 == 19.
# Lines are right-stripped and runs of blank lines collapse to one.
: > "$OUT/SOURCES"
k=0
: > "$OUT/train.txt"; : > "$OUT/valid.txt"
for s in kjv web gcide foldoc devil jargon fortunes wordnet; do
  printf '%s %s\n' "$s" "$(wc -c < "$RAW/$s.txt")" >> "$OUT/SOURCES"
  k=$(awk -v k0="$k" -v tr="$OUT/train.txt" -v va="$OUT/valid.txt" '
    function flush() {
      if (doc == "") return
      out = (k % 20 == 19) ? va : tr
      printf "%s\n<|endoftext|>\n", doc >> out
      k++; doc = ""
    }
    BEGIN { k = k0; doc = ""; para = "" }
    { sub(/[ \t\r]+$/, "") }
    /^$/ { if (para != "") { doc = (doc == "" ? para : doc "\n\n" para); para = "" }
           if (length(doc) >= 2048) flush(); next }
    { para = (para == "" ? $0 : para "\n" $0) }
    END { if (para != "") doc = (doc == "" ? para : doc "\n\n" para); flush(); print k }
  ' "$RAW/$s.txt")
done
rm -rf "$RAW"
echo "make_corpus: $k documents; train $(wc -c < "$OUT/train.txt") bytes, valid $(wc -c < "$OUT/valid.txt") bytes in $OUT"
