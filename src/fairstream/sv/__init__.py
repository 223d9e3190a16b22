"""Speaker verification: training data, objectives, embedding, scoring and fairness evaluation.

Modules: ``utterances`` (the utterance table of a corpus split), ``data`` (speaker-balanced
training batches with noise augmentation), ``objective`` (AAM-softmax + pairwise loss, the
ARW hook), ``train`` (config and the call into the one training loop), ``embed``
(embedding tables), ``scoring`` (cosine scoring, adaptive score normalization), ``evaluate``
(EER/minDCF overall and per group, bootstrap CIs, written reports), ``compare``
(two systems, paired bootstrap of their differences) and ``plots``.
"""
