"""`pacs-bridge users`: who may call the HTTP API, with which role, on which projects."""

from __future__ import annotations

import json
from typing import Annotated

import typer
from rich.table import Table

from bridge.access.roles import ALL_PROJECTS, Role
from bridge.cli.cohorts import actor
from bridge.cli.common import ConfigOption, load, output
from bridge.cli.filters import fail

app = typer.Typer(help="API users and their tokens.", no_args_is_help=True)
JsonOption = Annotated[bool, typer.Option("--json", help="Print as JSON for scripts.")]


@app.command("create")
def create(
    name: Annotated[str, typer.Argument(help="The user's name (letters, digits, . @ - _).")],
    role: Annotated[Role, typer.Option("--role", help="What the token may do.")],
    projects: Annotated[
        list[str] | None, typer.Option("--project", "-p", help="A project it may see (repeatable).")
    ] = None,
    all_projects: Annotated[bool, typer.Option("--all-projects", help="Every project, present and future.")] = False,
    config: ConfigOption = None,
    as_json: JsonOption = False,
) -> None:
    """Create a user and print its token, once: only its hash is kept."""
    from bridge.access.users import UserError
    from bridge.access.users import create as create_user
    from bridge.wiring import open_database

    if bool(projects) == all_projects and role is not Role.ADMIN:
        fail("give --project (one or more) or --all-projects")
    settings = load(config)
    for project in projects or []:
        settings.project(project)  # ConfigError naming the configured ones
    database = open_database(settings)
    try:
        with database.session() as session:
            user, token = create_user(session, name, role, projects or None, actor=actor())
    except UserError as exc:
        fail(str(exc))
    finally:
        database.dispose()
    if as_json:
        print(json.dumps({"name": user.name, "role": user.role, "projects": user.projects, "token": token}))
    else:
        output().print(f"user {user.name} ({user.role}, projects {user.projects}); its token, shown once:\n{token}")


@app.command("list")
def list_users(config: ConfigOption = None, as_json: JsonOption = False) -> None:
    """Users, their roles and projects, and whether their token is revoked."""
    from bridge.access.users import listing
    from bridge.wiring import open_database

    settings = load(config)
    database = open_database(settings)
    try:
        with database.reading() as session:
            users = [
                {
                    "name": u.name,
                    "role": u.role,
                    "projects": u.projects,
                    "created_at": str(u.created_at),
                    "revoked_at": str(u.revoked_at) if u.revoked_at else None,
                }
                for u in listing(session)
            ]
    finally:
        database.dispose()
    if as_json:
        print(json.dumps(users, indent=2))
        return
    table = Table("name", "role", "projects", "created", "revoked")
    for u in users:
        table.add_row(u["name"], u["role"], u["projects"] or ALL_PROJECTS, u["created_at"], u["revoked_at"] or "")
    output().print(table)


@app.command("revoke")
def revoke(
    name: Annotated[str, typer.Argument(help="The user whose token stops working.")], config: ConfigOption = None
) -> None:
    """Revoke a user's token at once (the user stays listed, as revoked)."""
    from bridge.access.users import UserError
    from bridge.access.users import revoke as revoke_user
    from bridge.wiring import open_database

    settings = load(config)
    database = open_database(settings)
    try:
        with database.session() as session:
            revoke_user(session, name, actor=actor())
    except UserError as exc:
        fail(str(exc))
    finally:
        database.dispose()
    output().print(f"revoked the token of {name}")
