"""The quality system: deviations and CAPA (``deviations``) and batch records with their
sign-off chain and release gate (``batches``).

Deviations sit below batches: a deviation does not know which batch workflow links it, the
batch records decide which batches it touches (``batches.linking``). Both are in one
package because the release gate, the review and the deviation workflow are one QA process.

The read views the CLI, the API and the pages show sit beside their services
(``batches.views``) or, for deviations, which name their batches, on top of both (``views``);
they read and never write.
"""
