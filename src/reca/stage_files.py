"""The file names stages hand each other: what one stage writes and a later one reads.

Stages pass paths, never Python objects, and no stage imports another stage:
the producer and every reader (stages, ``reca.data``, ``reca.training``)
import the names from here.

* ``curate`` writes :data:`CURATED_MANIFEST`, :data:`QUARANTINE`,
  :data:`DUPLICATES`, :data:`CURATE_REPORT` and :data:`VALIDATION`; ``degrade``
  reads the manifest and the report.
* ``degrade`` writes :data:`DEGRADED_MANIFEST` and :data:`DEGRADE_RECORD` (the
  settings every copy was made with); ``embed``, ``sft``, ``train`` and
  ``evaluate`` read them.
* ``embed`` writes the embedding cache, indexed by :data:`EMBEDDING_INDEX`;
  ``train`` reads it.
"""

from __future__ import annotations

#: curate: one row per usable image
CURATED_MANIFEST = "manifest.jsonl"
#: curate: one row per rejected input, with the reason
QUARANTINE = "quarantine.jsonl"
#: curate: one row per duplicate, with what it duplicates
DUPLICATES = "duplicates.jsonl"
#: curate: the counts (inputs = curated + quarantined + duplicates) and the validation outcome
CURATE_REPORT = "report.json"
#: curate: the great_expectations result over the files above
VALIDATION = "validation.json"

#: degrade: one row per image with the paths of its two copies
DEGRADED_MANIFEST = "manifest.jsonl"
#: degrade: the settings that determine the copies' pixels (part of the embedding cache key)
DEGRADE_RECORD = "degrade.json"

#: embed: the cache's key, what it was made from, and each split's shards
EMBEDDING_INDEX = "index.json"

#: start_model: beside the published starting model's weights, where it came from (params, data, seed, commit)
START_MODEL_LINEAGE = "lineage.json"
