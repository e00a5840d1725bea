"""The vault: what is needed to re-identify, kept apart from the research tables.

Its tables have their own MetaData so that they can live in their own database (`database.vault_url`).
Identifiers are encrypted (AES-GCM, key from the configured secret); lookups go through keyed hashes
(`patient_key`) or pseudo UIDs, so the database alone reveals nothing. Every read is audited.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from sqlalchemy import func
from sqlmodel import Session, select

from storage.audit import record_event
from storage.models.vault import VaultStudy, VaultSubject, VaultUid
from storage.upsert import insert_ignore


@dataclass(frozen=True)
class Identity:
    """The original identifiers of a patient, as they arrived."""

    issuer: str
    patient_id: str
    name: str
    birth_date: str


class VaultCipher:
    """AES-GCM with a random nonce; `key` is 32 bytes derived from the configured secret."""

    def __init__(self, key: bytes) -> None:
        if len(key) != 32:
            raise ValueError("the vault key must be 32 bytes")
        self._aead = AESGCM(key)

    def seal(self, plaintext: str) -> bytes:
        nonce = os.urandom(12)
        return nonce + self._aead.encrypt(nonce, plaintext.encode("utf-8"), None)

    def open(self, sealed: bytes) -> str:
        return self._aead.decrypt(sealed[:12], sealed[12:], None).decode("utf-8")


def find_subject(session: Session, *, project: str, patient_key: str) -> VaultSubject | None:
    statement = select(VaultSubject).where(VaultSubject.project == project, VaultSubject.patient_key == patient_key)
    return session.exec(statement).first()


def add_subject(
    session: Session,
    *,
    project: str,
    patient_key: str,
    code_of: Callable[[int], str],
    identity: Identity,
    cipher: VaultCipher,
) -> VaultSubject:
    """Allocate the next subject number of the project; `code_of` turns it into the subject code (the
    project's rule). The caller retries on a unique-constraint race."""
    highest = session.exec(select(func.max(VaultSubject.subject_number)).where(VaultSubject.project == project)).one()
    number = (highest or 0) + 1
    subject = VaultSubject(
        project=project,
        patient_key=patient_key,
        subject_number=number,
        subject_code=code_of(number),
        identity=cipher.seal(json.dumps(identity.__dict__)),
    )
    session.add(subject)
    session.flush()
    return subject


def add_uids(session: Session, *, project: str, pairs: Iterable[tuple[str, str]], cipher: VaultCipher) -> None:
    """Record (original, pseudo) UID pairs; pairs already known are left as they are."""
    rows = [{"project": project, "pseudo_uid": pseudo, "original": cipher.seal(original)} for original, pseudo in pairs]
    if rows:
        session.execute(insert_ignore(session, VaultUid.__table__), rows)  # type: ignore[attr-defined]


def known_pseudo_uids(session: Session, *, project: str, uids: Iterable[str]) -> set[str]:
    """Which of `uids` are pseudo UIDs the project handed out (nothing is decrypted: not a vault read)."""
    wanted, found = sorted(set(uids)), set[str]()
    for start in range(0, len(wanted), 500):
        chunk = wanted[start : start + 500]
        among = VaultUid.pseudo_uid.in_(chunk)  # type: ignore[attr-defined]
        statement = select(VaultUid.pseudo_uid).where(VaultUid.project == project, among)
        found.update(session.exec(statement))
    return found


def add_study(session: Session, *, project: str, pseudo_study_uid: str, accession: str, cipher: VaultCipher) -> None:
    row = {"project": project, "pseudo_study_uid": pseudo_study_uid, "accession": cipher.seal(accession)}
    session.execute(insert_ignore(session, VaultStudy.__table__), [row])  # type: ignore[attr-defined]


def reveal_uid(
    session: Session, *, project: str, pseudo_uid: str, cipher: VaultCipher, actor: str, audit: Session
) -> str | None:
    """The original UID behind a pseudo UID, for write-back into the hospital PACS. Audited."""
    row = session.get(VaultUid, (project, pseudo_uid))
    record_event(audit, actor=actor, action="vault.read_uid", object=pseudo_uid, detail="found" if row else "not found")
    return cipher.open(row.original) if row else None


def reveal_identity(
    session: Session, *, project: str, subject_code: str, cipher: VaultCipher, actor: str, audit: Session
) -> Identity | None:
    """The original identifiers of a subject. Audited."""
    row = session.exec(
        select(VaultSubject).where(VaultSubject.project == project, VaultSubject.subject_code == subject_code)
    ).first()
    record_event(
        audit, actor=actor, action="vault.read_identity", object=subject_code, detail="found" if row else "not found"
    )
    return Identity(**json.loads(cipher.open(row.identity))) if row else None


def reveal_uids(
    session: Session, *, project: str, pseudo_uids: Iterable[str], cipher: VaultCipher, actor: str, audit: Session
) -> dict[str, str]:
    """The original UIDs behind several pseudo UIDs of the project (those it knows). One audit event."""
    wanted, found = sorted(set(pseudo_uids)), {}
    for start in range(0, len(wanted), 500):
        chunk = wanted[start : start + 500]
        among = VaultUid.pseudo_uid.in_(chunk)  # type: ignore[attr-defined]
        statement = select(VaultUid).where(VaultUid.project == project, among)
        for row in session.exec(statement):
            found[row.pseudo_uid] = cipher.open(row.original)
    record_event(
        audit, actor=actor, action="vault.read_uids", object=project, detail=f"{len(found)} of {len(wanted)} found"
    )
    return found


def reveal_accession(
    session: Session, *, project: str, pseudo_study_uid: str, cipher: VaultCipher, actor: str, audit: Session
) -> str | None:
    """The original accession number of a study. Audited."""
    row = session.get(VaultStudy, (project, pseudo_study_uid))
    detail = "found" if row else "not found"
    record_event(audit, actor=actor, action="vault.read_accession", object=pseudo_study_uid, detail=detail)
    return cipher.open(row.accession) if row else None
