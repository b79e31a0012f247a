"""MLflow client credentials for cordwatch: from the environment or from a file only its owner can read.

There is no default password anywhere. Precedence:
1. MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD already in the environment (both, or it is an error);
2. a credentials file: the `file` argument, else the path in env CORDWATCH_MLFLOW_CREDENTIALS, an INI file

       [mlflow]
       username = pipeline
       password = ...

   with mode 0600 or stricter (a file group or others can read is refused); its values are put into the two
   MLFLOW_TRACKING_* variables of this process, which is where MlflowClient reads them at every request;
3. neither: no credentials (a local store, or a server without authentication).
"""

from __future__ import annotations

import configparser
import os
import stat
from dataclasses import dataclass, field
from pathlib import Path

USERNAME_ENV = "MLFLOW_TRACKING_USERNAME"
PASSWORD_ENV = "MLFLOW_TRACKING_PASSWORD"
FILE_ENV = "CORDWATCH_MLFLOW_CREDENTIALS"
SECTION = "mlflow"


class CredentialsError(RuntimeError):
    """Credentials are misconfigured: half set, unreadable, too open, or incomplete."""


@dataclass(frozen=True)
class Credentials:
    username: str
    password: str = field(repr=False)
    source: str  # "environment" or the file's path


def read_credentials_file(path: Path) -> Credentials:
    """Username and password from the `[mlflow]` section of `path`, refused unless its mode is 0600 or stricter."""
    try:
        info = path.stat()
    except OSError as exc:
        raise CredentialsError(f"cannot read the MLflow credentials file {path}: {exc.strerror}") from exc
    if not stat.S_ISREG(info.st_mode):
        raise CredentialsError(f"the MLflow credentials file {path} is not a regular file")
    mode = stat.S_IMODE(info.st_mode)
    if mode & 0o077:
        raise CredentialsError(
            f"the MLflow credentials file {path} has mode {mode:04o}: group or others may read it. "
            f"Run `chmod 600 {path}` (it holds a password)."
        )
    parser = configparser.ConfigParser(interpolation=None)
    try:
        parser.read_string(path.read_text(), source=str(path))
    except (OSError, configparser.Error) as exc:
        raise CredentialsError(f"cannot parse the MLflow credentials file {path}: {exc}") from exc
    username = parser.get(SECTION, "username", fallback="").strip()
    password = parser.get(SECTION, "password", fallback="").strip()
    if not username or not password:
        raise CredentialsError(f"the MLflow credentials file {path} needs `username` and `password` under [{SECTION}]")
    return Credentials(username, password, str(path))


def use_credentials(file: Path | None = None) -> Credentials | None:
    """Make MLflow clients of this process authenticate: environment first, else the 0600 file; None if neither."""
    username, password = os.environ.get(USERNAME_ENV, ""), os.environ.get(PASSWORD_ENV, "")
    if username and password:
        return Credentials(username, password, "environment")
    if username or password:
        missing = PASSWORD_ENV if username else USERNAME_ENV
        raise CredentialsError(f"{USERNAME_ENV} and {PASSWORD_ENV} go together: {missing} is not set")
    if file is None and (named := os.environ.get(FILE_ENV, "").strip()):
        file = Path(named).expanduser()
    if file is None:
        return None
    credentials = read_credentials_file(file)
    os.environ[USERNAME_ENV] = credentials.username
    os.environ[PASSWORD_ENV] = credentials.password
    return credentials
