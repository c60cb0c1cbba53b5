//! The role gate for streams and tickets (DECNET's `require_stream_viewer`).

use crate::Identity;

/// The read-only dashboard role. May stream and mint tickets.
pub const ROLE_VIEWER: &str = "viewer";

/// The administrator role. May stream and mint tickets.
pub const ROLE_ADMIN: &str = "admin";

/// Why an authenticated user may not open a stream or mint a ticket (HTTP 403).
///
/// `Display` gives DECNET's exact `detail` message for each case.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Forbidden {
    /// The user must change their password first.
    #[error("Password change required before accessing this resource")]
    PasswordChangeRequired,
    /// The user's role is neither `viewer` nor `admin`.
    #[error("Insufficient permissions")]
    InsufficientPermissions,
}

/// Whether `identity` may open an event stream or mint a stream ticket.
///
/// `must_change_password` is checked first, as DECNET's dependency does; then
/// the role must be exactly [`ROLE_VIEWER`] or [`ROLE_ADMIN`] (case-sensitive).
///
/// # Errors
///
/// [`Forbidden::PasswordChangeRequired`] when the user must change their
/// password, else [`Forbidden::InsufficientPermissions`] for any other role.
pub fn authorize_stream(identity: &Identity) -> Result<(), Forbidden> {
    check(&identity.role, identity.must_change_password)
}

/// The gate on raw fields, shared with [`crate::TokenVerifier::revalidate`].
pub(crate) fn check(role: &str, must_change_password: bool) -> Result<(), Forbidden> {
    if must_change_password {
        return Err(Forbidden::PasswordChangeRequired);
    }
    match role {
        ROLE_VIEWER | ROLE_ADMIN => Ok(()),
        _ => Err(Forbidden::InsufficientPermissions),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn identity(role: &str, must_change_password: bool) -> Identity {
        Identity {
            user_uuid: "u".into(),
            role: role.into(),
            must_change_password,
            jti: "j".into(),
            iat: 1,
            exp: 2,
        }
    }

    fn check(role: &str, must_change: bool, expected: Result<(), Forbidden>) {
        assert_eq!(
            authorize_stream(&identity(role, must_change)),
            expected,
            "role {role:?}, must_change_password {must_change}"
        );
    }

    #[test]
    fn viewer_may_stream() {
        check("viewer", false, Ok(()));
    }

    #[test]
    fn admin_may_stream() {
        check("admin", false, Ok(()));
    }

    #[test]
    fn other_roles_are_refused() {
        for role in ["", "Viewer", "ADMIN", "analyst", "viewer ", "guest"] {
            check(role, false, Err(Forbidden::InsufficientPermissions));
        }
    }

    #[test]
    fn password_change_is_checked_before_the_role() {
        check("admin", true, Err(Forbidden::PasswordChangeRequired));
        check("viewer", true, Err(Forbidden::PasswordChangeRequired));
        check("guest", true, Err(Forbidden::PasswordChangeRequired));
    }

    #[test]
    fn messages_are_decnets_exactly() {
        assert_eq!(
            Forbidden::PasswordChangeRequired.to_string(),
            "Password change required before accessing this resource"
        );
        assert_eq!(
            Forbidden::InsufficientPermissions.to_string(),
            "Insufficient permissions"
        );
    }
}
