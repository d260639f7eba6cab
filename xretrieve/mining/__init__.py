"""Bitext mining: the ratio margin and pair selection (``margin``), mining two corpora over
their distinct texts (``corpus``), where embeddings come from (``sources``), scoring against
gold pairs and threshold tuning (``gold``), mining through approximate indexes
(``through_index``), the Python API (``api``) and what ``xretrieve mine`` runs (``bitext``)."""
