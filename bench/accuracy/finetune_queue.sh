#!/usr/bin/env bash
# Runs bench/accuracy/finetune_pipeline.py configurations one after another, each in segments under
# /work/tools/heavy (a segment is one call; exit 3 = more to do). Usage: bench/finetune_queue.sh QUEUE_FILE
# QUEUE_FILE: one line of finetune_pipeline.py arguments per run; lines starting with # are skipped.
set -u
cd "$(dirname "$0")/../.."
queue="$1"
while IFS= read -r line; do
  [[ -z "$line" || "$line" == \#* ]] && continue
  for attempt in $(seq 1 20); do
    echo "[$(date +%H:%M:%S)] $line (segment $attempt, load $(cut -d' ' -f1-3 /proc/loadavg))"
    /work/tools/heavy timeout 1200 python bench/accuracy/finetune_pipeline.py $line
    rc=$?
    [[ $rc -eq 3 ]] && continue
    [[ $rc -ne 0 ]] && echo "FAILED rc=$rc: $line"
    break
  done
done < "$queue"
echo "[$(date +%H:%M:%S)] queue done"
